"""``raymlops alerts receive``: Alertmanager's webhook receiver, acting on alerts per ``alerts.rules``.

    raymlops alerts receive [--host H] [--port P] [overrides ...]

Listens on http://HOST:PORT/alerts (default ``alerts.host``/``alerts.port``, 127.0.0.1:9095) until
Ctrl-C. A firing alert gets the action of the first rule naming it (``retrain``: a ``raymlops retrain``
job with these overrides through the Ray job server at ``alerts.retrain.address``; ``rollback``: the
previous champion back in ``serve.app_name``; ``record``), a resolved one is recorded; an alert whose
``env`` label is not ``env.name`` is refused. Each outcome is in ``security.audit_log`` with the alert
(``raymlops security audit``). With ``$RAYMLOPS_ALERTS_TOKEN`` (``alerts.token_env``) set, each webhook
must send it as a bearer token. Point Alertmanager at it (docs/alerts.md):

    receivers:
      - name: raymlops
        webhook_configs:
          - url: http://127.0.0.1:9095/alerts
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

__all__ = ["add_alerts_commands", "run_alerts_command"]


def add_alerts_commands(sub: argparse._SubParsersAction) -> None:
    alerts = sub.add_parser("alerts", help="alerts that act: Alertmanager's webhook receiver")
    commands = alerts.add_subparsers(dest="command", required=True)
    receive = commands.add_parser(
        "receive",
        help="serve the Alertmanager webhook: retrain, roll back or record per alerts.rules",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    receive.add_argument("--host", default=None, help="listen address (default: alerts.host)")
    receive.add_argument("--port", type=int, default=None, help="listen port (default: alerts.port)")
    receive.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job (env=prod, ...)")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_alerts_command(args: argparse.Namespace) -> int:
    from raymlops.cli.overrides import compose_overrides
    from raymlops.monitoring.alert_actions import AlertActions
    from raymlops.monitoring.alert_receiver import AlertReceiver
    from raymlops.security.roles import resolve_principal

    cfg = compose_overrides(list(args.overrides))
    actions = AlertActions(cfg, args.overrides, principal=resolve_principal(cfg.security))
    host = args.host or str(cfg.alerts.host)
    port = args.port if args.port is not None else int(cfg.alerts.port)
    token = os.environ.get(str(cfg.alerts.token_env)) or None
    receiver = AlertReceiver(actions, host, port, token=token)
    rules = ", ".join(f"{r.alertname}->{r.action}" for r in actions.rules) or "none"
    print(f"receiving Alertmanager webhooks at {receiver.url} for env={actions.env} (Ctrl-C stops)")
    print(f"  rules: {rules}; otherwise {actions.default_action}; bearer token: {'yes' if token else 'no'}")
    # SIGTERM (systemd, a Kubernetes pod ending) stops it like Ctrl-C: the socket closed, the log flushed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        receiver.stop()
    return 0
