"""The HTTP side of alerts that act: Alertmanager's webhook receiver (``raymlops alerts receive``).

    POST /alerts    an Alertmanager webhook notification (payload version 4) -> JSON, one outcome an alert
    GET  /healthz   200 "ok"

The standard library's threading HTTP server: a webhook gets a few requests a minute, and actions run
one at a time anyway (:class:`~raymlops.monitoring.alert_actions.AlertActions` holds a lock). Status codes
(Alertmanager retries a 5xx, not a 4xx): 200 handled; 400 a malformed body (the message names the
field); 401 a missing or wrong bearer token (audited); 403 an alert of another env (audited); 413 a body
over ``max_body_bytes``; 422 an action that failed for good; 503 one that may succeed on a retry.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from raymlops.errors import RequestError

__all__ = ["AlertReceiver"]

logger = logging.getLogger(__name__)
PATH = "/alerts"


class AlertReceiver:
    """Serves ``actions`` (an :class:`AlertActions`) on ``host:port`` (port 0: a free one).

    ``token``: when set, every POST must carry ``Authorization: Bearer <token>`` (Alertmanager's
    ``webhook_configs[].http_config.authorization.credentials``).
    """

    def __init__(
        self,
        actions: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        max_body_bytes: int = 1 << 20,
    ) -> None:
        self.actions, self.token, self.max_body_bytes = actions, token, max_body_bytes
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    def start(self) -> str:
        """Serve in a background thread; the webhook URL."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="alert-receiver", daemon=True)
        self._thread.start()
        logger.info("alert receiver listening url=%s env=%s", self.url, self.actions.env)
        return self.url

    def serve_forever(self) -> None:
        logger.info("alert receiver listening url=%s env=%s", self.url, self.actions.env)
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    # ------------------------------------------------------------------ one request

    def respond(self, headers: Any, body: bytes | None, too_big: bool) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for a POST to :data:`PATH`."""
        from raymlops.monitoring.alert_actions import parse_webhook

        if self.token is not None:
            given = str(headers.get("Authorization") or "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                from raymlops.security.audit import audit_event

                why = "no bearer token" if not given else "wrong bearer token"
                audit_event(
                    "authenticate", "alerts", "refused", why, who="anonymous", path=self.actions.audit_log
                )
                return 401, {"error": f"{why}: send Authorization: Bearer <alerts.token_env's value>"}
        if too_big:
            return 413, {"error": f"the body is over {self.max_body_bytes} bytes"}
        try:
            payload = json.loads(body or b"")
            alerts = parse_webhook(payload)
        except json.JSONDecodeError as exc:
            return 400, {"error": f"the body is not JSON: {exc}"}
        except RequestError as exc:
            return exc.status, {"error": str(exc)}
        status, outcomes = self.actions.handle(alerts)
        return status, {"alerts": [asdict(o) for o in outcomes]}


def _handler(receiver: AlertReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "raymlops-alerts"

        def _send(self, status: int, body: dict[str, Any] | str) -> None:
            data = (json.dumps(body, default=str) if isinstance(body, dict) else body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, "ok")
            else:
                self._send(404, {"error": f"no route GET {self.path}; POST {PATH}, GET /healthz"})

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != PATH:
                self._send(404, {"error": f"no route POST {self.path}; Alertmanager posts to {PATH}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self._send(400, {"error": "Content-Length is not a number"})
                return
            too_big = length > receiver.max_body_bytes
            body = None if too_big else self.rfile.read(length)
            status, answer = receiver.respond(self.headers, body, too_big)
            if status >= 400:
                logger.warning("alert webhook answered status=%s body=%s", status, answer)
            self._send(status, answer)
            if too_big:
                self.close_connection = True  # the unread body must not be taken for the next request

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("alert receiver " + format, *args)

    return Handler
