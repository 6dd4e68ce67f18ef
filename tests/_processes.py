"""Two processes on localhost joined by `jax.distributed` (one CPU device each), for the multi-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_process_flags(address: str, i: int) -> list[str]:
    """`experiments.run`'s flags for process i of two meeting at `address`."""
    return ["--distributed", "--coordinator", address, "--num-processes", "2", "--process-id", str(i)]


def start_two(argv) -> list[subprocess.Popen]:
    """Two processes of `argv(coordinator address, process id)` (python's arguments), one CPU device each."""
    address = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return [subprocess.Popen([sys.executable, *argv(address, i)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(2)]
