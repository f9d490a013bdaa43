"""Secrets out of recorded configs: secret keys and URL passwords replaced before MLflow sees them."""

from __future__ import annotations

from raymlops.registry.tracking import flatten
from raymlops.security.redact import REDACTED, redact_config, redact_url


def test_secret_keys_and_url_passwords_are_replaced_names_and_paths_kept() -> None:
    config = {
        "data": {"lakefs": {"secret_access_key": "s3cr3t-value", "access_key_id": "AKIA1", "host": ""}},
        "features": {"online_store": {"url": "redis://:hunter2@cache:6379/0"}},
        "serve": {"tls": {"keyfile_password_env": "TLS_PASS", "keyfile": "/k.pem"}},
        "security": {"signing": {"key_env": "RAYMLOPS_SIGNING_KEY", "key_file": None}},
    }
    params = flatten(redact_config(config))
    assert params["data.lakefs.secret_access_key"] == REDACTED
    assert params["features.online_store.url"] == "redis://:***@cache:6379/0"
    assert "s3cr3t-value" not in repr(params) and "hunter2" not in repr(params)
    # What only names a variable or a file, identifiers, empty values and non-secret keys stay.
    assert (
        params["serve.tls.keyfile_password_env"] == "TLS_PASS"
        and params["data.lakefs.access_key_id"] == "AKIA1"
    )
    assert params["data.lakefs.host"] == "" and params["security.signing.key_file"] is None
    assert redact_config({"secret": ""}) == {"secret": ""}  # nothing to hide: unset stays visible
    assert redact_url("https://example.com/a@b") == "https://example.com/a@b"
    assert config["data"]["lakefs"]["secret_access_key"] == "s3cr3t-value"  # a copy: the job's config intact
