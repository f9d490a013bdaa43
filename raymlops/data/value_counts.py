"""Bounded value counts of a string column: exact while small, DataSketches sketches beyond.

A column's counts stay an exact ``{value: rows}`` dict while it has at most ``max_exact`` distinct values
(``validate.max_exact_distinct``). Beyond that (in a block, or when two partials merge) they become two
serialized sketches, so memory and the bytes a block sends stay bounded whatever the number of rows:

- a frequent-items sketch (``datasketches.frequent_strings_sketch``, ``lg_max_k`` = :data:`LG_MAX_K`): the
  heavy hitters; each count it reports is within ``epsilon * N`` of the true one, ``N`` the column's
  non-null rows and ``epsilon`` = 3.5 / 2**LG_MAX_K = 0.00171 (Misra-Gries/SpaceSaving, DataSketches'
  a-priori bound; the bound holds through merges). A value rarer than that may be missing.
- an HLL sketch (``datasketches.hll_sketch``, ``lg_k`` = :data:`HLL_LG_K`): the distinct count, an
  *estimate* with a relative standard error of 1.04 / sqrt(2**HLL_LG_K) = 1.6 %.

Sketches are kept as bytes: live DataSketches objects are created and dropped inside one function call
(they leak at interpreter exit otherwise).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = [
    "HLL_LG_K",
    "LG_MAX_K",
    "MAX_EXACT_DISTINCT",
    "frequent_above",
    "merge_sketches",
    "sketch_distinct",
    "sketch_top",
    "to_sketches",
]

# 10k distinct values as exact counts are ~200 KB of JSON per block and per merge: beyond that a column
# is an identifier or free text, whose every value the driver has no use for (issue 18).
MAX_EXACT_DISTINCT = 10_000
LG_MAX_K = 11  # at most 1,536 items kept: counts within 0.17 % of the rows, ~30 KB serialized
HLL_LG_K = 12  # 4,096 registers (4 KB as HLL_8): 1.6 % relative standard error on the distinct count


def to_sketches(pairs: Iterable[tuple[Any, int]]) -> tuple[bytes, bytes]:
    """(frequent items, HLL) sketches, serialized, of ``(value, rows)`` pairs."""
    import datasketches as ds

    items, hll = ds.frequent_strings_sketch(LG_MAX_K), ds.hll_sketch(HLL_LG_K, ds.tgt_hll_type.HLL_8)
    for value, rows in pairs:
        text = str(value)
        items.update(text, int(rows))
        hll.update(text)
    return items.serialize(), hll.serialize_compact()


def merge_sketches(a: tuple[bytes, bytes], b: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    """Two serialized (frequent items, HLL) pairs merged into one."""
    import datasketches as ds

    items = ds.frequent_strings_sketch.deserialize(a[0])
    items.merge(ds.frequent_strings_sketch.deserialize(b[0]))
    union = ds.hll_union(HLL_LG_K)
    union.update(ds.hll_sketch.deserialize(a[1]))
    union.update(ds.hll_sketch.deserialize(b[1]))
    return items.serialize(), union.get_result(ds.tgt_hll_type.HLL_8).serialize_compact()


def sketch_distinct(hll: bytes) -> int:
    """The HLL's distinct-count estimate, rounded."""
    import datasketches as ds

    return round(ds.hll_sketch.deserialize(hll).get_estimate())


def sketch_top(items: bytes, n: int) -> list[tuple[str, int]]:
    """The ``n`` most frequent values with their estimated counts, most frequent first (ties by value).

    Only values surely above the sketch's error (no false positives): a column of unique ids has none.
    """
    import datasketches as ds

    sketch = ds.frequent_strings_sketch.deserialize(items)
    found = sketch.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_POSITIVES, 0)
    ranked = sorted(((str(v), int(est)) for v, est, _, _ in found), key=lambda p: (-p[1], p[0]))
    return ranked[:n]


def frequent_above(items: bytes, min_rows: int) -> dict[str, int]:
    """The values whose count is surely at least ``min_rows`` (lower bound), with their estimates.

    No false positives; a value within the sketch's error of ``min_rows`` may be missed.
    """
    import datasketches as ds

    sketch = ds.frequent_strings_sketch.deserialize(items)
    found = sketch.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_POSITIVES, max(min_rows - 1, 0))
    return {str(v): int(est) for v, est, lower, _ in found if lower >= min_rows}


def merge_exact(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    counts = Counter(a)
    counts.update(b)
    return dict(counts)
