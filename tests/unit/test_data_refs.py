"""Data references parse to a backend, a location and a pin; malformed ones name the formats."""

from __future__ import annotations

import pytest

from raymlops.data.refs import parse_ref
from raymlops.data.versioning import DataVersion
from raymlops.errors import ConfigError


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("delta:/data/flights", ("delta", "/data/flights", None)),
        ("delta:/data/flights@12", ("delta", "/data/flights", "12")),
        ("delta:s3://bucket/t@3", ("delta", "s3://bucket/t", "3")),
        ("lakefs://repo/main/tables/flights", ("lakefs", "repo/tables/flights", "main")),
        ("lakefs://repo/a1b2c3/tables/flights/", ("lakefs", "repo/tables/flights", "a1b2c3")),
        ("/data/flights.parquet", ("files", "/data/flights.parquet", None)),
        (f"files:/d/f.csv@sha256:{'a' * 64}", ("files", "/d/f.csv", "a" * 64)),
    ],
)
def test_references_parse(ref: str, expected: tuple) -> None:
    parsed = parse_ref(ref)
    assert (parsed.backend, parsed.location, parsed.pin) == expected


@pytest.mark.parametrize("ref", ["lakefs://repo-only", "s3://bucket/x", "s3:/x", "", "delta:"])
def test_malformed_references_name_the_formats(ref: str) -> None:
    with pytest.raises(ConfigError, match=r"data\.ref.*cannot parse.*lakefs://<repo>"):
        parse_ref(ref)


@pytest.mark.parametrize(
    "version",
    [
        DataVersion("delta", "/data/flights", "4"),
        DataVersion("lakefs", "repo/tables/flights", "c0ffee"),
        DataVersion("files", "/d/f.parquet", "b" * 64),
    ],
)
def test_a_recorded_version_parses_back_to_itself(version: DataVersion) -> None:
    parsed = parse_ref(str(version))
    assert (parsed.backend, parsed.location, parsed.pin) == (
        version.backend,
        version.location,
        version.version,
    )
