"""Beyond one host: two processes on localhost joined by `jax.distributed` (CPU devices, gloo collectives)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from experiments import run as run_cli
from hybrid_jax import config as config_lib
from hybrid_jax import sharding

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_two(argv: list[str]) -> list[subprocess.Popen]:
    """Two processes of `argv` + [coordinator, process id], one CPU device each."""
    address = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return [subprocess.Popen([sys.executable, *argv(address, i)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(2)]


def test_two_processes_sample_and_train_as_one(tmp_path):
    """Model B's sampler and a data-parallel train step over a mesh spanning two processes (each
    holding half the batch; the gradient all-reduced over gloo) equal one process's results."""
    import _distributed_check

    procs = _start_two(lambda address, i: [str(TESTS / "_distributed_check.py"), str(tmp_path / f"two_{i}.npz"),
                                           address, str(i)])
    _distributed_check.main(str(tmp_path / "one.npz"))  # the reference, meanwhile, in this process
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"process {i}:\n{out}\n{err[-3000:]}"
        assert f"process {i} of 2:" in out and out.strip().endswith("OK")
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two_0.npz")
    assert not (tmp_path / "two_1.npz").exists()  # one writer
    np.testing.assert_allclose(two["images"], one["images"], atol=1e-5)
    assert float(np.std(one["images"])) > 0.01
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-6)
    mus = [k for k in one if k.startswith("mu_")]
    scale = max(float(np.abs(one[k]).max()) for k in mus)
    assert max(float(np.abs(two[k] - one[k]).max()) for k in mus) <= 1e-5 * scale  # gradients agree
    # params: Adam's first step is lr x sign(g) where |g| >> 1e-8, so they agree wherever g is more than
    # round-off (see tests/_sharding_check.py); a round-off gradient moves a parameter by up to lr either way
    lr = config_lib.get_preset("test").model_b.train.lr
    for k in (k for k in one if k.startswith("params_")):
        assert np.abs(two[k] - one[k]).max() <= 2 * lr


def test_distributed_flags_and_environment(monkeypatch):
    assert run_cli.distributed(run_cli.parse_args([])) is None  # nothing initialised unless asked
    args = ["--distributed", "--coordinator", "10.0.0.1:1234", "--num-processes", "4", "--process-id", "3"]
    assert run_cli.distributed(run_cli.parse_args(args)) == sharding.Distributed("10.0.0.1:1234", 4, 3)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host0:5678")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert run_cli.distributed(run_cli.parse_args(["--distributed"])) == sharding.Distributed("host0:5678", 2, 1)
    assert run_cli.distributed(run_cli.parse_args(["--distributed", "--process-id", "0"])).process_id == 0


def test_the_stages_in_two_processes_are_refused_cleanly(tmp_path):
    """`--distributed` joins the processes, then the stages (one writer, host-side results) refuse
    to run across them: exit code 2, one message, no work dir."""
    workdir = tmp_path / "run"
    procs = _start_two(lambda address, i: ["-m", "experiments.run", "--preset", "test", "--workdir", str(workdir),
                                           "--distributed", "--coordinator", address, "--num-processes", "2",
                                           "--process-id", str(i)])
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2, err[-3000:]
        assert "error: the study's stages run in one process for now, and this run has 2" in err
    assert not workdir.exists()
