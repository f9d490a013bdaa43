"""Artifact integrity (raymlops.security.integrity): a flipped byte is refused with both digests and
an audit record, before onnxruntime sees the graph; HMAC and Ed25519 signatures over the digest list
verify, and a wrong key, a tampered digest list or a missing signature is refused."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from raymlops.errors import ConfigError, IntegrityError
from raymlops.registry.tags import DIGESTS_TAG, SIGNATURE_TAG
from raymlops.security.audit import read_audit, verify_chain
from raymlops.security.crypto import Keyring, write_encrypted
from raymlops.security.integrity import (
    Signer,
    digest_bytes,
    expected_digests,
    integrity_tags,
    onnx_digest,
    read_artifact,
)
from raymlops.serving.onnx_model import LoadedModel
from raymlops.serving.spec import ModelSpec

KEYRING = Keyring.parse(f"k1:{base64.b64encode(bytes(32)).decode()}", "test")


def _graph() -> bytes:
    """distance [N] -> sigmoid(distance / 1000) as ``probability``: the smallest servable graph."""
    from onnx import TensorProto, helper, numpy_helper

    model = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Mul", ["distance", "scale"], ["logit"]),
                helper.make_node("Sigmoid", ["logit"], ["probability"]),
            ],
            "tiny",
            [helper.make_tensor_value_info("distance", TensorProto.FLOAT, [None, 1])],
            [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1])],
            [numpy_helper.from_array(np.asarray(1e-3, dtype=np.float32), "scale")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    return model.SerializeToString()


def _flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "encrypted"])
def test_one_flipped_byte_is_refused_with_both_digests_and_an_audit_record(tmp_path, encrypted):
    graph = _graph()
    path = tmp_path / "model.onnx"
    if encrypted:
        write_encrypted(path, graph, KEYRING)
    else:
        path.write_bytes(graph)
    digest = digest_bytes(graph)
    spec = ModelSpec("m", "3", str(path), "v", {"distance": "float"}, digest=digest)
    audit = tmp_path / "audit.jsonl"
    loaded = LoadedModel(spec, audit_log=audit) if not encrypted else None  # the untouched file loads
    if encrypted:
        assert read_artifact(path, digest=digest, keyring=KEYRING) == graph
    else:
        assert loaded is not None and loaded.session.get_inputs()[0].name == "distance"

    # One byte: the lowest of the weight's float (the graph stays valid, its answers change a little),
    # or one of the ciphertext.
    weight = np.asarray(1e-3, dtype=np.float32).tobytes()
    _flip(path, path.stat().st_size - 20 if encrypted else graph.index(weight))
    if encrypted:
        with pytest.raises(IntegrityError, match="do not authenticate"):
            read_artifact(path, digest=digest, keyring=KEYRING, what="m v3", audit_log=audit)
    else:
        with pytest.raises(IntegrityError) as info:
            LoadedModel(spec, audit_log=audit)
        message = str(info.value)
        actual = digest_bytes(path.read_bytes())
        assert str(path) in message and digest in message and actual in message
    (record,) = read_audit(audit)
    assert (record.action, record.target, record.outcome) == ("artifact-refused", "m v3", "refused")
    assert record.details["file"] == str(path)
    if not encrypted:
        assert (record.details["expected"], record.details["actual"]) == (digest, actual)
    assert verify_chain(audit) is None
    # Without a recorded digest the same bytes would have loaded: the check is what refuses them.
    if not encrypted:
        assert LoadedModel(ModelSpec("m", "3", str(path), "v", {"distance": "float"}), audit_log=audit)


def _ed25519_pems() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def test_signatures_verify_and_refuse_a_wrong_key_or_a_tampered_digest_list():
    digests = {"model.onnx": "a" * 64, "profile.json": "b" * 64, "explainer/explainer.json": "c" * 64}
    private, public = _ed25519_pems()
    other_private, other_public = _ed25519_pems()
    pairs = [
        (Signer("hmac", hmac_key=b"s" * 32), Signer("hmac", hmac_key=b"t" * 32)),
        (Signer("ed25519", private_pem=private), Signer("ed25519", public_pem=other_public)),
    ]
    for signer, wrong in pairs:
        tags = integrity_tags(digests, signer)
        assert json.loads(tags[DIGESTS_TAG]) == digests
        verifier = Signer(
            signer.mode, hmac_key=signer.hmac_key, public_pem=public if signer.private_pem else b""
        )
        assert expected_digests(tags, verifier, "m v1") == digests  # a verifier needs only the public key
        assert onnx_digest(tags, verifier, "m v1") == "a" * 64
        with pytest.raises(IntegrityError, match="does not verify"):
            expected_digests(tags, wrong, "m v1")
        tampered = dict(tags, **{DIGESTS_TAG: json.dumps({**digests, "model.onnx": "d" * 64})})
        with pytest.raises(IntegrityError, match="does not verify"):
            onnx_digest(tampered, verifier, "m v1")  # a swapped graph's digest is not signed
        with pytest.raises(IntegrityError, match="carries no artifact signature"):
            expected_digests({DIGESTS_TAG: tags[DIGESTS_TAG]}, verifier, "m v1")
        with pytest.raises(IntegrityError, match="carries no artifact signature"):
            expected_digests({}, verifier, "m v1")  # stripping the tags does not downgrade the check
    # An HMAC signature does not pass for an Ed25519 verifier, nor the other way round.
    hmac_tags = integrity_tags(digests, pairs[0][0])
    with pytest.raises(IntegrityError, match="its signature is 'hmac-sha256'"):
        expected_digests(hmac_tags, Signer("ed25519", public_pem=public), "m v1")
    del other_private


def test_digest_mode_and_bad_settings():
    digests = {"model.onnx": "a" * 64}
    tags = integrity_tags(digests, Signer())
    assert SIGNATURE_TAG not in tags
    assert onnx_digest(tags, Signer(), "m v1") == "a" * 64
    assert onnx_digest({}, Signer(), "m v1") == ""  # registered before digests: loads unchecked
    with pytest.raises(IntegrityError, match=r"list no model\.onnx"):
        onnx_digest({DIGESTS_TAG: json.dumps({"profile.json": "b" * 64})}, Signer(), "m v1")
    with pytest.raises(IntegrityError, match="is damaged"):
        onnx_digest({DIGESTS_TAG: "{not json"}, Signer(), "m v1")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        Signer("hmac", hmac_key=b"short")
    with pytest.raises(ConfigError, match="one of"):
        Signer("rsa")
    with pytest.raises(ConfigError, match="64 hex digits"):
        ModelSpec("m", "1", "/m.onnx", "v", {"a": "float"}, digest="abc")
    assert "s" * 32 not in repr(Signer("hmac", hmac_key=b"s" * 32))  # no secret in a repr
