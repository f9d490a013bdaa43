"""serve.tls settings are checked on the driver, before Serve starts: both files, readable, PEM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raymlops.errors import ConfigError
from raymlops.serving.deploy import TLSSettings


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n")
    key.chmod(0o600)
    return {"certfile": str(cert), "keyfile": str(key)}


def test_both_files_give_https_options(pem: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    tls = TLSSettings.from_dict(pem)
    assert tls is not None
    assert tls.http_options() == {"ssl_certfile": pem["certfile"], "ssl_keyfile": pem["keyfile"]}
    monkeypatch.setenv("SERVE_KEY_PASSWORD", "s3cret")
    tls = TLSSettings.from_dict({**pem, "keyfile_password_env": "SERVE_KEY_PASSWORD"})
    assert tls is not None and tls.http_options()["ssl_keyfile_password"] == "s3cret"
    assert TLSSettings.from_dict({"certfile": None, "keyfile": None, "keyfile_password_env": None}) is None


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        ({"keyfile": None}, "serve.tls.keyfile", "HTTPS needs both the certificate and its private key"),
        ({"certfile": ""}, "serve.tls.certfile", "is not set but serve.tls.keyfile is"),
        ({"certfile": "/nonexistent/cert.pem"}, "serve.tls.certfile", "cannot be read"),
        ({"keyfile": "NOT_PEM"}, "serve.tls.keyfile", "is not a PEM file"),
        ({"keyfile_password_env": "RAYMLOPS_UNSET_PASSWORD"}, "serve.tls.keyfile_password_env", "not set"),
        ({"ca": "x"}, "serve.tls.ca", "is not a TLS setting"),
    ],
)
def test_unusable_tls_settings_are_config_errors(
    pem: dict[str, str], tmp_path: Path, change: dict[str, Any], key: str, fragment: str
) -> None:
    if change.get("keyfile") == "NOT_PEM":
        (tmp_path / "plain.key").write_text("not a key")
        change = {"keyfile": str(tmp_path / "plain.key")}
    with pytest.raises(ConfigError) as info:
        TLSSettings.from_dict({**pem, **change})
    assert info.value.key == key and fragment in str(info.value)
