"""Long checks, skipped by default: run with `python -m pytest -m slow` or `-m gpu`."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parents[1]
DEV_DATA = Path(os.environ.get("HYBRID_JAX_DEV_DATA", REPO.parent / "shared/data/cifar-10-batches-py"))


@pytest.mark.slow
@pytest.mark.skipif(not DEV_DATA.exists(), reason="development CIFAR-10 copy not present")
def test_quick_preset_end_to_end_on_real_data_within_15_minutes(tmp_path):
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "experiments.run", "--data", str(DEV_DATA), "--workdir",
                          str(tmp_path / "quick")], cwd=REPO, capture_output=True, text=True, timeout=1800)
    minutes = (time.perf_counter() - t0) / 60
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "quick" / "report" / "samples_a_vs_b.png").stat().st_size > 0
    print(f"quick preset end to end: {minutes:.1f} min")
    assert minutes <= 15


@pytest.mark.slow
def test_paper_shapes_end_to_end_within_30_minutes(tmp_path):
    """Every stage with every paper network at full size (preset `paper-shapes`), on the stand-in data."""
    from hybrid_jax import io

    workdir = tmp_path / "paper-shapes"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "experiments.run", "--preset", "paper-shapes", "--offline",
                          "--workdir", str(workdir)], cwd=REPO, capture_output=True, text=True, timeout=2400)
    minutes = (time.perf_counter() - t0) / 60
    assert out.returncode == 0, out.stderr[-3000:]
    stages = {s: io.read_json(workdir / s / "done.json")["summary"]["stage_seconds"]
              for s in ("data", "model_a", "model_b", "corrector", "seeds", "features", "labels", "router", "routed",
                        "allocate", "report")}
    print(f"paper shapes end to end: {minutes:.1f} min; stage seconds: {stages}")
    assert minutes <= 30


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")
def test_paper_model_a_bf16_meets_25_ms_per_image():
    from hybrid_jax import timing
    from hybrid_jax.generators import model_a
    from hybrid_jax.config import get_preset

    cfg = get_preset("paper").model_a
    cfg = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, dtype="bfloat16"))
    params = jax.jit(lambda k: model_a.init_params(cfg, k))(jax.random.key(0))
    sampler = model_a.make_sampler(cfg)
    keys = jax.random.split(jax.random.key(1), 256)
    t = timing.time_fn(sampler.sample_keys, params, keys, repeats=2)
    ms_per_image = 1e3 * t.median_s / 256
    print(f"paper Model A, bf16, batch 256, {jax.devices()[0].device_kind}: {ms_per_image:.1f} ms/image")
    assert ms_per_image <= 25
