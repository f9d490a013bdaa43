"""Hash splits over Ray Data blocks: a partition of the rows, the same in any block layout, groups whole."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raymlops.data.hash_splits import hash_split

pytestmark = pytest.mark.usefixtures("ray_local")

ROWS = 6000


def _rows() -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "id": np.arange(ROWS),
            "x": rng.normal(size=ROWS),
            "account": pa.array([f"a{v}" for v in rng.integers(0, 300, ROWS)]),
            "label": pa.array(rng.choice(["YES", "NO", "MAYBE"], size=ROWS, p=[0.1, 0.7, 0.2])),
        }
    )


def _splits(table: pa.Table, blocks: int, kind: str) -> list[pa.Table]:
    import ray
    import ray.data

    ds = ray.data.from_arrow(table).repartition(blocks)
    splits = hash_split(ds, kind, (0.7, 0.15, 0.15), seed=3, label="label", group_column="account")
    return [pa.concat_tables(ray.get(split.to_arrow_refs())) for split in splits]


@pytest.mark.parametrize("kind", ["random", "stratified", "group"])
def test_a_partition_that_ignores_the_block_layout(kind: str) -> None:
    table = _rows()
    one, many = _splits(table, 1, kind), _splits(table, 7, kind)
    ids = [sorted(split["id"].to_pylist()) for split in one]
    assert ids == [sorted(split["id"].to_pylist()) for split in many]
    assert sorted(i for split in ids for i in split) == list(range(ROWS))  # every row once, none twice
    assert set(one[0].column_names) == set(table.column_names)  # the tag column is gone
    assert all(abs(len(split) / ROWS - f) < 0.05 for split, f in zip(ids, (0.7, 0.15, 0.15), strict=True))
    if kind == "group":
        owners = [set(split["account"].to_pylist()) for split in one]
        assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    if kind == "stratified":
        labels = table["label"].to_pylist()
        for split in one:
            for value in ("YES", "NO", "MAYBE"):
                share = split["label"].to_pylist().count(value) / len(split)
                assert abs(share - labels.count(value) / ROWS) <= 0.01
