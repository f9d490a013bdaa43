"""HTTPS for the serving endpoint: Serve's proxy started with a certificate and key from the config.

One Serve of its own (HTTP options are fixed when Serve starts), with a self-signed certificate for
127.0.0.1 made here. A client that trusts that certificate is answered; plain HTTP on the same port
and a client that trusts only the public CAs are not; a deploy that would silently downgrade the
running Serve to plain HTTP is refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from raymlops.errors import DeploymentError
from raymlops.serving import ModelSpec, deploy
from tests.integration.test_serving import PRE, ROWS, WEIGHTS, free_port, model_graph

APP = "serving-tls-test"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (CN and IP SAN) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "serve.crt", folder / "serve.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass(frozen=True)
class Secure:
    url: str
    port: int
    cert: Path
    spec: ModelSpec


@pytest.fixture(scope="module")
def secure(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    import onnx
    from ray import serve

    from raymlops.models.export import compose_pipeline

    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(folder)
    path = folder / "flights.onnx"
    onnx.save(compose_pipeline(PRE, model_graph(WEIGHTS["1"])), str(path))
    spec = ModelSpec("flights", "1", str(path), "delta-1", PRE.input_columns)
    serve.shutdown()  # HTTP options are fixed at start: this module needs a Serve of its own
    port = free_port()
    tls = {"certfile": str(cert), "keyfile": str(key), "keyfile_password_env": None}
    try:
        url = deploy([spec], app_name=APP, host="127.0.0.1", port=port, timeout_s=90, tls=tls)
        yield Secure(url, port, cert, spec)
    finally:
        serve.shutdown()


def test_a_client_trusting_the_certificate_is_answered_over_https(secure: Secure) -> None:
    assert secure.url == f"https://127.0.0.1:{secure.port}"
    with httpx.Client(verify=str(secure.cert), timeout=30) as client:
        response = client.post(f"{secure.url}/v1/models/flights/predict", json={"records": ROWS[:2]})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2


def test_plain_http_and_untrusting_clients_get_nothing(secure: Secure) -> None:
    # Plain HTTP to the TLS port: the proxy never reads it as a request, so nothing is answered.
    with pytest.raises(httpx.TransportError):
        httpx.post(f"http://127.0.0.1:{secure.port}/v1/models/flights/predict", json=ROWS[:1], timeout=10)
    # A client that trusts only the public CAs refuses the self-signed certificate.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{secure.url}/v2/health/ready", timeout=10)


def test_a_deploy_without_tls_onto_the_https_serve_is_refused(secure: Secure) -> None:
    with pytest.raises(DeploymentError, match="already running with HTTPS"):
        deploy([secure.spec], app_name=APP, host="127.0.0.1", port=secure.port, timeout_s=30)
