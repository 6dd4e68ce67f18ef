"""Beyond one host: two processes on localhost joined by `jax.distributed` (CPU devices, gloo collectives)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _processes import start_two, two_process_flags

from experiments import run as run_cli
from hybrid_jax import config as config_lib
from hybrid_jax import sharding

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def test_two_processes_sample_and_train_as_one(tmp_path):
    """Model B's sampler and a data-parallel train step over a mesh spanning two processes (each
    holding half the batch; the gradient all-reduced over gloo) equal one process's results."""
    import _distributed_check

    procs = start_two(lambda address, i: [str(TESTS / "_distributed_check.py"), str(tmp_path / f"two_{i}.npz"),
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


THROUGH_SEEDS = "data,model_a,model_b,corrector,seeds"


def _run_argv(workdir: Path, *extra: str) -> list[str]:
    return ["-m", "experiments.run", "--preset", "test", "--offline", "--workdir", str(workdir),
            "--stages", THROUGH_SEEDS, "--devices", "2", "--no-compile-cache", *extra]


def _two_process_argv(workdir: Path):
    return lambda address, i: _run_argv(workdir, *two_process_flags(address, i))


@pytest.mark.slow  # 85 s: three processes train on 2 cores (the seeds stage alone: tests/test_pipeline.py)
def test_the_stages_in_two_processes_equal_one_process(tmp_path):
    """Training and the seeds stage on a 2-device mesh spanning two processes (gloo) write what one process
    with 2 devices writes; process 0 alone writes the files and run.log, and the lock is released."""
    procs = start_two(_two_process_argv(tmp_path / "two"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"}
    one = subprocess.run([sys.executable, *_run_argv(tmp_path / "one")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    for i, p in enumerate(procs):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"process {i}:\n{err[-3000:]}"
        assert f"[process {i}] INFO hybrid_jax.pipeline: stage seeds     finished" in err
    two, ref = (np.load(tmp_path / d / "seeds" / "seeds.npz") for d in ("two", "one"))
    np.testing.assert_array_equal(two["seeds"], ref["seeds"])
    assert list(two["options"]) == list(ref["options"]) and len(ref["options"]) == 2
    for k in ref["options"]:  # the brief pair's images, each under its option's name
        np.testing.assert_allclose(two[k], ref[k], atol=1e-6)
        assert float(np.std(ref[k])) > 0.01
    np.testing.assert_allclose(*(np.load(tmp_path / d / "seeds" / "features.npz")["features"]
                                 for d in ("two", "one")), atol=1e-6)
    log = (tmp_path / "two" / "run.log").read_text()
    assert "[process 0]" in log and "[process 1]" not in log  # one writer
    assert not (tmp_path / "two" / "run.lock").exists()
    assert len(list((tmp_path / "two" / "seeds" / "png").glob("*.png"))) == 2 * len(ref["seeds"])


def test_two_processes_on_a_busy_work_dir_are_both_refused(tmp_path):
    """Process 0 finds the work dir locked by a live run and every process exits 2 with its message; the
    lock stays the holder's."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-01-01 00:00:00"}
    (workdir / "run.lock").write_text(json.dumps(holder))
    procs = start_two(_two_process_argv(workdir))
    errs = [p.communicate(timeout=120)[1] for p in procs]
    for p, err in zip(procs, errs):
        assert p.returncode == 2, err[-3000:]
        assert "is in use by another run" in err
    assert f"pid {os.getpid()}, started 2026-01-01 00:00:00" in errs[0]  # process 0 names the holder
    assert json.loads((workdir / "run.lock").read_text()) == holder
    assert not (workdir / "data").exists()
