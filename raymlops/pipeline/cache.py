"""Step cache and resume: a stage's output reused from an earlier run whose inputs were the same.

A stage's **key** is a digest of (see :func:`stage_key`):

- its inputs: the keys of the earlier stages whose outputs it reads (``Stage.cache_inputs``; None: every
  earlier stage) — so a change upstream invalidates everything downstream of it; ingest's input is the
  data version its reference resolves to now (``Stage.cache_key_extra``);
- the config keys it reads (``Stage.cache_config``; None: the whole config but :data:`NOT_READ`);
- its code: raymlops' version, the digest of the stage's module source and ``Stage.cache_version``.

An entry lives in ``<cache.dir>/<stage>/<key>/``: ``output.pkl`` (the outputs it put in the pipeline state,
pickled; Ray Datasets replaced by the Parquet files of their blocks under ``datasets/``, files of the run
folder by copies under ``files/``) and ``meta.json`` (the run it came from, the figures and lineage the
stage recorded). With ``security.encryption`` on, the pickle, the Parquet blocks and the copied files are
encrypted like every other artifact. A hit restores the outputs (files copied into the new run's folder,
Datasets read back block by block) and its figures and lineage, with ``cached=<run id>`` in its figures,
and the stage may refuse a hit whose world moved (``Stage.cache_reuse``: the champion evaluate compared
with, the version register made). The state folder is trusted as the registry database is: pickles are
read only from it.

``resume=<run id>|last``: a failed run's stages are reused where their keys still match, and ingest
reads the data version the failed run read (not what the reference resolves to now), so the run goes
on with the same lineage; the stage that failed, and every later one, runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import inspect
import json
import logging
import os
import pickle
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raymlops.errors import ConfigError

if TYPE_CHECKING:
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.stage import Stage
    from raymlops.pipeline.state import PipelineState

__all__ = [
    "NOT_READ",
    "CacheHit",
    "StageCache",
    "code_digest",
    "config_digest",
    "resume_origin",
    "stage_key",
]

logger = logging.getLogger(__name__)

# Config sections no stage before deploy reads: the conservative digest of a stage that declares no keys
# leaves them out (serving, monitoring and the loop change nothing a model is made of).
NOT_READ = ("serve", "monitor", "retrain", "loop", "ray", "stages", "cache", "resume")
OUTPUT_FILE = "output.pkl"
META_FILE = "meta.json"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def config_digest(cfg: Any, keys: tuple[str, ...] | None) -> str:
    """The digest of the resolved values of the dotted ``keys`` of ``cfg`` (None: all but NOT_READ)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if keys is None:
        keys = tuple(str(k) for k in cfg if str(k) not in NOT_READ)
    values: dict[str, Any] = {}
    for key in keys:
        node = OmegaConf.select(cfg, key, default=None)
        if isinstance(node, (DictConfig, ListConfig)):
            node = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
        values[key] = getattr(node, "value", node)  # an Enum's value
    return _digest(values)


def code_digest(stage_cls: type) -> str:
    """raymlops' version, the stage module's source and the stage's ``cache_version``, digested."""
    import raymlops

    source = inspect.getsourcefile(stage_cls)
    text = Path(source).read_bytes() if source else b""
    parts = [
        raymlops.__version__,
        str(getattr(stage_cls, "cache_version", "")),
        hashlib.sha256(text).hexdigest(),
    ]
    return _digest(parts)


def stage_key(
    stage: Stage, ctx: RunContext, by_stage: dict[str, str | None], by_slot: dict[str, str | None]
) -> str | None:
    """The cache key of ``stage`` in this run, or None when it cannot be cached here.

    ``by_stage``: the key of every earlier stage of this run (None: it had none); ``by_slot``: the key of
    the stage that filled each state slot (``train`` is filled by train or tune).
    """
    if not stage.cacheable:
        return None
    if stage.cache_inputs is None:
        if any(key is None for key in [*by_stage.values(), *by_slot.values()]):
            return None
        inputs = dict(by_stage)
    else:
        inputs = {}
        for slot in stage.cache_inputs:
            if slot not in by_slot:
                continue  # an optional input (validate, explain) this run does not make
            if by_slot[slot] is None:
                return None  # made by something uncached (a stage of one's own, a state handed in)
            inputs[slot] = by_slot[slot]
    try:
        extra = stage.cache_key_extra(ctx)
    except Exception as exc:  # the stage itself says what is wrong when it runs
        logger.warning("no cache key stage=%s: %s: %s", stage.name, type(exc).__name__, exc)
        return None
    if extra is None:
        return None
    parts = {
        "stage": stage.name,
        "inputs": inputs,
        "config": config_digest(ctx.cfg, stage.cache_config),
        "code": code_digest(type(stage)),
        "extra": extra,
    }
    return _digest(parts)[:32]


@dataclass(frozen=True)
class _StoredDataset:
    name: str  # datasets/<name>/part-<n>.parquet


@dataclass(frozen=True)
class _StoredPath:
    relative: str  # files/<relative>, and <run_dir>/<relative> once restored


@dataclass(frozen=True)
class CacheHit:
    state: PipelineState
    run_id: str  # the run that computed the output
    slots: tuple[str, ...]


class StageCache:
    """Entries under ``root``, one folder per stage and key. Written once, atomically (a rename)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @classmethod
    def from_config(cls, cfg: Any) -> StageCache | None:
        """The job's cache, or None with ``cache.enabled=false``."""
        return cls(str(cfg.cache.dir)) if cfg.cache.enabled else None

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    # -- writing

    def store(
        self,
        stage: Stage,
        key: str,
        ctx: RunContext,
        before: PipelineState,
        after: PipelineState,
        lineage_before: dict[str, Any],
    ) -> None:
        """Keep what ``stage`` added to the state and to the run's figures and lineage under ``key``."""
        started = time.monotonic()
        slots = [
            f.name for f in dataclasses.fields(after) if getattr(after, f.name) is not getattr(before, f.name)
        ]
        draft = self.root / stage.name / f".{key}.{uuid.uuid4().hex[:8]}"
        draft.mkdir(parents=True)
        try:
            packer = _Packer(draft, ctx.run_dir)
            outputs = {slot: packer.pack(getattr(after, slot), slot) for slot in slots}
            for name in stage.cache_files:  # run-folder files the stage writes beside its output
                if (ctx.run_dir / name).exists():
                    packer.pack(ctx.run_dir / name, name)
            _write(draft / OUTPUT_FILE, pickle.dumps(outputs))
            lineage = {
                k: v for k, v in ctx.lineage.items() if k != "stage_seconds" and lineage_before.get(k) != v
            }
            meta = {
                "stage": stage.name,
                "key": key,
                "run_id": ctx.run_id,
                "run_dir": str(ctx.run_dir),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "slots": slots,
                "files": packer.files,
                "figures": ctx.figures.get(stage.name, {}),
                "lineage": lineage,
            }
            (draft / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
            target = self.entry(stage.name, key)
            if target.exists():  # recomputed (its world moved, or a concurrent run): the newer one wins
                shutil.rmtree(target, ignore_errors=True)
            draft.rename(target)
        except BaseException:
            shutil.rmtree(draft, ignore_errors=True)
            raise
        logger.info(
            "stage stored in cache stage=%s key=%s elapsed_s=%.2f",
            stage.name,
            key,
            time.monotonic() - started,
        )

    # -- reading

    def load(self, stage: Stage, key: str, ctx: RunContext, state: PipelineState) -> CacheHit | None:
        """The stored output of ``stage`` under ``key`` restored into this run, or None (no entry, or the
        stage refused it: the reason is logged)."""
        folder = self.entry(stage.name, key)
        if not (folder / META_FILE).exists():
            return None
        from raymlops.security.crypto import read_maybe_encrypted

        meta = json.loads((folder / META_FILE).read_text())
        unpacker = _Unpacker(folder, ctx.run_dir, meta["files"])
        outputs = {
            slot: unpacker.unpack(value, slot)
            for slot, value in pickle.loads(read_maybe_encrypted(folder / OUTPUT_FILE)).items()
        }
        unpacker.restore_files(stage.cache_files)
        restored = state.with_(**outputs)
        why = stage.cache_reuse(ctx, restored, meta["run_id"])
        if why is not None:
            logger.info("stage cache entry refused stage=%s from_run=%s: %s", stage.name, meta["run_id"], why)
            return None
        # Paths the stage recorded name the old run's folder; the restored files are in this one's.
        lineage_text = json.dumps(meta["lineage"]).replace(
            json.dumps(meta["run_dir"])[1:-1], json.dumps(str(ctx.run_dir))[1:-1]
        )
        ctx.lineage.update(json.loads(lineage_text))
        ctx.lineage.setdefault("cached", {})[stage.name] = meta["run_id"]
        ctx.record(stage.name, **meta["figures"], cached=meta["run_id"])
        return CacheHit(restored, meta["run_id"], tuple(meta["slots"]))


def _write(path: Path, data: bytes) -> None:
    from raymlops.security.crypto import active_keyring, is_encrypted, write_encrypted

    keyring = active_keyring()
    path.parent.mkdir(parents=True, exist_ok=True)
    if keyring is not None and not is_encrypted(data):
        write_encrypted(path, data, keyring)
    else:
        path.write_bytes(data)


class _Packer:
    """Replaces what a pickle cannot keep (Ray Datasets) or must not point at (the run's folder)."""

    def __init__(self, folder: Path, run_dir: Path) -> None:
        self.folder, self.run_dir = folder, run_dir.resolve()
        self.files: dict[str, bool] = {}  # run-folder path -> it was encrypted when stored

    def pack(self, value: Any, name: str) -> Any:
        import ray.data

        if isinstance(value, ray.data.Dataset):
            self._dataset(value, name)
            return _StoredDataset(name)
        if isinstance(value, Path):
            return self._path(value)
        if isinstance(value, dict):
            return {k: self.pack(v, f"{name}.{k}") for k, v in value.items()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes: dict[str, Any] = {}
            for f in dataclasses.fields(value):
                current = getattr(value, f.name)
                if f.metadata.get("transient") and current is not None:  # an in-process copy of a field
                    changes[f.name] = None
                    continue
                packed = self.pack(current, f"{name}.{f.name}")
                if packed is not current:
                    changes[f.name] = packed
            return dataclasses.replace(value, **changes) if changes else value
        return value

    def _dataset(self, dataset: Any, name: str) -> None:
        """Its blocks as Parquet files, one per block, so the restored Dataset has the same blocks.

        Through the driver: the datasets a stage hands on are the (materialized) splits of one table."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        import ray

        folder = self.folder / "datasets" / name
        refs = dataset.to_arrow_refs()
        tables = [ray.get(ref) for ref in refs] or [dataset.schema().base_schema.empty_table()]
        for index, table in enumerate(tables):
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            _write(folder / f"part-{index:05d}.parquet", sink.getvalue().to_pybytes())

    def _path(self, path: Path) -> Any:
        try:
            relative = path.resolve().relative_to(self.run_dir)
        except ValueError:
            return path  # outside the run's folder (the registry's copy): it outlives the run
        if not path.exists():
            return path
        from raymlops.security.crypto import is_encrypted

        for source in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if source.is_file():
                data = source.read_bytes()
                inner = source.resolve().relative_to(self.run_dir)
                self.files[str(inner)] = is_encrypted(data)
                _write(self.folder / "files" / inner, data)
        return _StoredPath(str(relative))


class _Unpacker:
    def __init__(self, folder: Path, run_dir: Path, files: dict[str, bool]) -> None:
        self.folder, self.run_dir, self.files = folder, run_dir, files
        self.copied = False

    def unpack(self, value: Any, name: str) -> Any:
        if isinstance(value, _StoredDataset):
            return self._dataset(value.name)
        if isinstance(value, _StoredPath):
            self.restore_files(())
            return self.run_dir / value.relative
        if isinstance(value, dict):
            return {k: self.unpack(v, f"{name}.{k}") for k, v in value.items()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes: dict[str, Any] = {}
            for f in dataclasses.fields(value):
                current = getattr(value, f.name)
                unpacked = self.unpack(current, f"{name}.{f.name}")
                if unpacked is not current:
                    changes[f.name] = unpacked
            return dataclasses.replace(value, **changes) if changes else value
        return value

    def restore_files(self, names: tuple[str, ...]) -> None:
        """Every stored file back into the run's folder, as the stage left it (plaintext unless it was
        written encrypted): later stages read and seal them as they would have."""
        if self.copied:
            return
        from raymlops.security.crypto import read_maybe_encrypted

        for relative, was_encrypted in self.files.items():
            stored = self.folder / "files" / relative
            target = self.run_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if was_encrypted:
                shutil.copyfile(stored, target)
            else:
                target.write_bytes(read_maybe_encrypted(stored))
        self.copied = True

    def _dataset(self, name: str) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq
        import ray.data

        from raymlops.security.crypto import read_maybe_encrypted

        parts = sorted((self.folder / "datasets" / name).glob("part-*.parquet"))
        tables = [pq.read_table(pa.BufferReader(read_maybe_encrypted(p))) for p in parts]
        return ray.data.from_arrow(tables)


def resume_origin(cfg: Any) -> tuple[str, dict[str, Any]] | None:
    """The failed run ``resume`` names (``last``: the newest failed run) and its summary; None if unset.

    Raises:
        ConfigError: ``resume`` names no run of this state folder, a run that succeeded, or the cache is off.
    """
    wanted = cfg.resume
    if wanted is None:
        return None
    if not cfg.cache.enabled:
        raise ConfigError(
            "resume",
            f"{wanted!r} needs the step cache (the failed run's outputs live there); set cache.enabled=true.",
        )
    runs = Path(str(cfg.state_dir)) / "runs"
    summaries = {p.parent.name: p for p in runs.glob("*/summary.json")}
    if str(wanted) == "last":
        failed = [r for r in sorted(summaries, reverse=True) if _status(summaries[r]) == "failed"]
        if not failed:
            raise ConfigError("resume", f"'last': no failed run in {runs}; run without resume.")
        wanted = failed[0]
    wanted = str(wanted)
    if wanted not in summaries:
        raise ConfigError("resume", f"{wanted!r} is no run of {runs}.", sorted(summaries, reverse=True)[:10])
    summary = json.loads(summaries[wanted].read_text())
    if summary.get("status") != "failed":
        raise ConfigError(
            "resume",
            f"run {wanted!r} {summary.get('status')}: nothing to resume (an identical run reuses its stages "
            "through the cache anyway); drop resume=.",
        )
    return wanted, summary


def _status(path: Path) -> str:
    try:
        return str(json.loads(path.read_text()).get("status"))
    except (OSError, ValueError):
        return "unknown"
