"""``raymlops job ...``: the pipeline job, here or on a Ray cluster.

    raymlops job run [overrides ...]          the job on this machine (``python -m raymlops.job``)
    raymlops job submit [--address A] [--state-dir D] [--no-wait] [--installed] [overrides ...]

``job submit`` sends ``python -m raymlops.job <overrides>`` to a Ray cluster through the job submission
API (``RAY_ADDRESS``, e.g. http://127.0.0.1:8265). It uploads this repository as the job's working
directory (respecting .gitignore; ``--installed``: not, the nodes' image has the package), streams the
job's logs and exits with its status (0 only if it SUCCEEDED). Ray 2.60 enables token authentication:
when a token is at hand (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN) it is sent
(RAY_AUTH_MODE=token); RAY_AUTH_MODE=disabled where the cluster runs without auth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_job_commands", "run_job_command"]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"


def _repository() -> Path:
    """The source checkout holding this package (what ``job submit`` uploads), else the working folder."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def add_job_commands(sub: argparse._SubParsersAction) -> None:
    job = sub.add_parser("job", help="the pipeline job: run it here, or submit it to a Ray cluster")
    commands = job.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run the pipeline job on this machine (python -m raymlops.job: Hydra overrides)"
    )
    run.add_argument("overrides", nargs="*", help="Hydra overrides (+experiment=quickstart, ...)")
    submit = commands.add_parser(
        "submit",
        help="submit the pipeline job to a Ray cluster and follow it (jobs/submit.py)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    submit.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS", DEFAULT_ADDRESS),
        help="Ray dashboard address (default: $RAY_ADDRESS or %(default)s)",
    )
    submit.add_argument(
        "--state-dir",
        default=os.environ.get("RAYMLOPS_HOME", str(_repository() / ".raymlops")),
        help="RAYMLOPS_HOME for the job: an absolute path on the cluster (default: %(default)s)",
    )
    submit.add_argument("--no-wait", action="store_true", help="submit and print the job id without waiting")
    submit.add_argument(
        "--installed",
        action="store_true",
        help="the cluster's nodes have raymlops installed (the container image): upload no working directory",
    )
    submit.add_argument(
        "overrides", nargs="*", help="Hydra overrides for the job (+experiment=quickstart, ...)"
    )


def run_job_command(args: argparse.Namespace) -> int:
    """The job checks the role of each of its actions itself (``authorize_job``), here or on the cluster."""
    if args.command == "run":
        # The job command itself, in this process's place: its Hydra set-up, output and exit status.
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "raymlops.job", *args.overrides])
    return _submit(args)


def _auth_from_environment() -> None:
    """Turn on token auth for the client when a token is at hand (Ray does not do so by itself)."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.exists():
        os.environ["RAY_AUTH_MODE"] = "token"


async def _stream(client: Any, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def _submit(args: argparse.Namespace) -> int:
    _auth_from_environment()
    from ray.job_submission import JobStatus, JobSubmissionClient

    address = args.address if "://" in args.address else f"http://{args.address}"
    try:
        client = JobSubmissionClient(address)
    except Exception as exc:  # connection refused, 401/403 from token auth, not a Ray dashboard, ...
        print(f"{args.prog}: cannot use the Ray job server at {address}: {exc}", file=sys.stderr)
        print(
            "Is the cluster up (`ray start --head`)? With token auth, set RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH (README: Authentication).",
            file=sys.stderr,
        )
        return 2
    entrypoint = "python -m raymlops.job " + " ".join(shlex.quote(o) for o in args.overrides)
    job_id = client.submit_job(
        entrypoint=entrypoint,
        runtime_env={
            **({} if args.installed else {"working_dir": str(_repository())}),
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
