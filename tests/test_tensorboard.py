"""TensorBoard event files: a training run's losses, learning rate and throughput, and stage timings."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from experiments import run as run_cli
from hybrid_jax import config as config_lib
from hybrid_jax import io, tensorboard


def test_a_training_run_writes_event_files_that_read_back_with_its_losses(tmp_path):
    pytest.importorskip("tensorboardX")
    workdir = tmp_path / "run"
    assert run_cli.main(["--preset", "test", "--workdir", str(workdir), "--stages", "data,model_b"]) == 0
    losses = io.read_npz(workdir / "model_b" / "losses.npz")["losses"]
    train_cfg = config_lib.get_preset("test").model_b.train
    scalars = tensorboard.read_scalars(workdir / "tb" / "model_b")
    steps = [s for s, _ in scalars["loss"]]
    assert steps == list(range(train_cfg.log_every, len(losses) + 1, train_cfg.log_every))
    expected = [losses[s - train_cfg.log_every:s].mean() for s in steps]  # mean loss since the last log step
    np.testing.assert_allclose([v for _, v in scalars["loss"]], expected, rtol=1e-6)
    assert [v for _, v in scalars["learning_rate"]] == pytest.approx([train_cfg.lr] * len(steps))
    assert all(v > 0 for _, v in scalars["images_per_second"])
    stages = tensorboard.read_scalars(workdir / "tb" / "stages")
    assert set(stages) == {"stage_seconds/data", "stage_seconds/model_b"}
    done = io.read_json(workdir / "model_b" / "done.json")["summary"]
    assert stages["stage_seconds/model_b"][0][1] == pytest.approx(done["stage_seconds"], rel=1e-6)
    data_done = io.read_json(workdir / "data" / "done.json")["summary"]
    assert 0 < data_done["peak_rss_mib"] <= done["peak_rss_mib"] < 64 * 1024  # the process peak only grows


def test_without_tensorboardx_one_info_line_no_warning_and_no_files(tmp_path, monkeypatch, caplog):
    """TensorBoard is an optional extra: a run without it gets one info line per process, never a warning."""
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorboardX"] + ["tensorboardX"]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    tensorboard._tensorboardx.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="hybrid_jax.tensorboard"):
            write = tensorboard.scalar_writer(tmp_path / "tb")
            tensorboard.scalar_writer(tmp_path / "tb2")  # a second writer: no second line
    finally:
        tensorboard._tensorboardx.cache_clear()
    write("loss", 1.0, 1)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO,
        "tensorboardX is not installed: no TensorBoard event files (pip install -e '.[tensorboard]')")]
    assert not (tmp_path / "tb").exists() and not (tmp_path / "tb2").exists()
