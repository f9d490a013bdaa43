"""``python -m raymlops features ...``: fill the online store from the feature views, and look inside it.

    features materialize [--view V ...] [--as-of TIME] [--full]   latest row per entity into the store
    features status [--view V ...]                                what each view's last run wrote
    features show VIEW KEY [KEY ...]                              stored rows of some entities

Views default to ``features.views`` of the composed config, or every view in ``configs/features/views/``
when it names none. The store is ``features.online_store``; trailing Hydra overrides (``env=prod``,
``features.online_store.kind=redis``) choose it as for the job.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from omegaconf import OmegaConf

__all__ = ["add_features_commands", "run_features_command"]

_KEY_SEPARATOR = ","  # composite keys on the command line: EWR,ORD


def add_features_commands(sub: argparse._SubParsersAction) -> None:
    features = sub.add_parser("features", help="feature views and the online store").add_subparsers(
        dest="command", required=True
    )
    materialize = features.add_parser("materialize", help="latest feature rows per entity into the store")
    materialize.add_argument("--view", action="append", default=None, help="a view (repeatable)")
    materialize.add_argument(
        "--as-of", default=None, help="ISO 8601 instant (UTC if naive); default: each view's newest event"
    )
    materialize.add_argument(
        "--full", action="store_true", help="rebuild the views instead of adding to them"
    )
    status = features.add_parser("status", help="what the last materialization of each view wrote")
    status.add_argument("--view", action="append", default=None)
    status.add_argument("--json", action="store_true")
    show = features.add_parser("show", help="stored rows of entities (composite keys: a,b)")
    show.add_argument("view")
    show.add_argument("keys", nargs="+")
    for parser in (materialize, status, show):
        parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")


def _views(cfg: Any, names: list[str] | None, check_columns: bool = True) -> list[Any]:
    from raymlops.features.views import available_views, load_views

    chosen = names or [str(n) for n in cfg.features.views] or available_views()
    return load_views(chosen, state_dir=str(cfg.state_dir), check_columns=check_columns)


def _store(cfg: Any) -> Any:
    from raymlops.features.online import open_online_store

    return open_online_store(OmegaConf.to_container(cfg.features.online_store, resolve=True))  # type: ignore[arg-type]


def run_features_command(args: argparse.Namespace) -> int:
    from raymlops.config import compose

    if args.command == "show":  # `show VIEW KEY... key=value`: the keys' nargs took the overrides too
        keys = list(args.keys)
        args.keys = [k for k in keys if "=" not in k]
        args.overrides = [*args.overrides, *(k for k in keys if "=" in k)]
    cfg = compose(args.overrides)
    store = _store(cfg)
    try:
        if args.command == "materialize":
            return _materialize(args, cfg, store)
        if args.command == "status":
            return _status(args, cfg, store)
        return _show(args, cfg, store)
    finally:
        store.close()


def _materialize(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    from raymlops.data.splits import parse_instant
    from raymlops.features.materialize import materialize
    from raymlops.pipeline.ray_session import connect_ray

    as_of = parse_instant(args.as_of, "--as-of") if args.as_of else None
    views = _views(cfg, args.view)
    print(f"online store: {store!r}; views: {', '.join(v.name for v in views)}")
    connect_ray(cfg.ray)
    states = materialize(views, store, as_of=as_of, full=args.full, lakefs=cfg.data.lakefs, progress=print)
    print(_table(states))
    return 0


def _table(states: list[Any]) -> str:
    header = ("view", "as of", "source version", "mode", "written", "expired", "entities")
    rows = [
        (
            s.view,
            s.as_of,
            s.source_version,
            "full" if s.full else "incremental",
            s.rows_written,
            s.expired,
            s.entities,
        )
        for s in states
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    )


def _status(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    views = _views(cfg, args.view, check_columns=False)
    states = {v.name: store.get_state(v.name) for v in views}
    if args.json:
        print(
            json.dumps(
                {k: None if s is None else json.loads(s.to_json()) for k, s in states.items()}, indent=2
            )
        )
        return 0
    print(f"online store: {store!r}")
    done = [s for s in states.values() if s is not None]
    if done:
        print(_table(done))
    for name, state in states.items():
        if state is None:
            print(f"{name}: never materialized (python -m raymlops features materialize --view {name})")
    return 0


def _show(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    from raymlops.features.online import TS_FIELD, entity_key

    view = _views(cfg, [args.view], check_columns=False)[0]
    keys = [entity_key(k.split(_KEY_SEPARATOR)) for k in args.keys]
    rows = store.lookup({view.name: keys})[view.name]
    for text, row in zip(args.keys, rows, strict=True):
        if row is None:
            print(f"{text}: not in the store")
            continue
        when = dt.datetime.fromtimestamp(row.pop(TS_FIELD) / 1e6, dt.timezone.utc).isoformat()
        print(f"{text} (event time {when}): {json.dumps(row)}")
    return 0
