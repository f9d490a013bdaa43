"""Submit ``python -m raymlops.job <overrides>`` to a Ray cluster through the job submission API.

    RAY_ADDRESS=http://127.0.0.1:8265 python jobs/submit.py +experiment=quickstart [overrides ...]

Uploads this repository as the job's working directory (respecting .gitignore; ``--installed``: not,
the nodes' image has the package), streams the job's logs
and exits with its status (0 only if it SUCCEEDED). Ray 2.60 enables token authentication: when a token
is at hand (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN) this script sends it
(RAY_AUTH_MODE=token); RAY_AUTH_MODE=disabled where the cluster runs without auth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"


def _auth_from_environment() -> None:
    """Turn on token auth for the client when a token is at hand (Ray does not do so by itself)."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.exists():
        os.environ["RAY_AUTH_MODE"] = "token"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS", DEFAULT_ADDRESS),
        help="Ray dashboard address (default: $RAY_ADDRESS or %(default)s)",
    )
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("RAYMLOPS_HOME", str(REPO / ".raymlops")),
        help="RAYMLOPS_HOME for the job: an absolute path on the cluster (default: %(default)s)",
    )
    parser.add_argument("--no-wait", action="store_true", help="submit and print the job id without waiting")
    parser.add_argument(
        "--installed",
        action="store_true",
        help="the cluster's nodes have raymlops installed (the container image): upload no working directory",
    )
    return parser.parse_known_args(argv)


async def _stream(client, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    _auth_from_environment()
    from ray.job_submission import JobStatus, JobSubmissionClient

    address = args.address if "://" in args.address else f"http://{args.address}"
    try:
        client = JobSubmissionClient(address)
    except Exception as exc:  # connection refused, 401/403 from token auth, not a Ray dashboard, ...
        print(f"submit.py: cannot use the Ray job server at {address}: {exc}", file=sys.stderr)
        print(
            "Is the cluster up (`ray start --head`)? With token auth, set RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH (README: Authentication).",
            file=sys.stderr,
        )
        return 2
    entrypoint = "python -m raymlops.job " + " ".join(shlex.quote(o) for o in overrides)
    job_id = client.submit_job(
        entrypoint=entrypoint,
        runtime_env={
            **({} if args.installed else {"working_dir": str(REPO)}),
            # The working directory is a temporary unpacked copy: state must live at an absolute path.
            "env_vars": {"RAYMLOPS_HOME": args.state_dir, "RAYMLOPS_PROGRESS": "0"},
        },
    )
    print(f"submitted job {job_id} to {address}: {entrypoint}", flush=True)
    if args.no_wait:
        return 0
    try:
        asyncio.run(_stream(client, job_id))
    except KeyboardInterrupt:
        print(f"\nstopped following; the job goes on. Stop it with: ray job stop {job_id}", file=sys.stderr)
        return 130
    status = client.get_job_status(job_id)
    print(f"job {job_id} finished: {status}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
