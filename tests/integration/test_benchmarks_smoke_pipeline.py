"""The benchmarks that run the quickstart print their JSON figures at ``--smoke`` size
(tests/benchmark_smoke.py says why and how)."""

from __future__ import annotations

import pytest

from tests.benchmark_smoke import PIPELINE, check_smoke
from tests.conftest import _ray_token_in_place

# Not in `make test` (CI's 30 minutes on 2 cores: these two cost 234 s there); `make bench-smoke` runs them.
pytestmark = [pytest.mark.slow, pytest.mark.bench_pipeline]


@pytest.fixture(scope="module", autouse=True)
def ray_token() -> None:
    """The Ray token every benchmark's Ray and the other pytest process's Ray share (tests/conftest.py)."""
    _ray_token_in_place()


@pytest.mark.parametrize("name", PIPELINE)
def test_benchmark_runs_at_smoke_size_and_prints_its_figures(name: str) -> None:
    check_smoke(name)
