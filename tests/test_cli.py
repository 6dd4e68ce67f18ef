"""Tests of the command line `python -m experiments.run`: flags in, config overrides out.

Fast: nothing here trains or compiles; the only JAX import is the stage-name check.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments import run as run_cli
from hybrid_jax import config as config_lib

REPO = Path(__file__).resolve().parents[1]


def _overrides(*argv: str) -> list[str]:
    return run_cli.config_overrides(run_cli.parse_args(list(argv)))


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("HYBRID_JAX_CIFAR10", raising=False)


def test_set_takes_several_pairs_and_is_repeatable():
    assert _overrides("--set", "a=1", "b=2", "--set", "c=3") == ["a=1", "b=2", "c=3"]
    assert _overrides("--set", "seeds.num_seeds=50", "--preset", "test") == ["seeds.num_seeds=50"]
    assert _overrides() == []
    cfg = config_lib.apply_overrides(config_lib.get_preset("test"),
                                     _overrides("--set", "seeds.num_seeds=50", "router.threshold=0.6"))
    assert cfg.seeds.num_seeds == 50 and cfg.router.threshold == 0.6
    with pytest.raises(SystemExit):
        run_cli.parse_args(["--set"])


def test_data_class_and_offline_flags_map_to_config_fields(monkeypatch):
    argv = ["--data", "tfds:imagenet_resized/64x64", "--class", "n02119789", "--offline"]
    assert _overrides(*argv) == ["data.path=tfds:imagenet_resized/64x64", "data.class_name=n02119789",
                                 "data.offline=true"]
    cfg = config_lib.apply_overrides(config_lib.get_preset("test"), _overrides(*argv))
    assert cfg.data.path == "tfds:imagenet_resized/64x64" and cfg.data.offline is True
    assert config_lib.get_preset("test").data.offline is False  # online by default
    monkeypatch.setenv("HYBRID_JAX_CIFAR10", "/data/cifar")
    assert _overrides() == ["data.path=/data/cifar"]
    assert _overrides("--data", "stand-in") == ["data.path=stand-in"]


def test_defaults():
    args = run_cli.parse_args([])
    assert args.preset == run_cli.DEFAULT_PRESET == "quick" and args.workdir is None and args.stages is None
    assert not args.offline and args.devices == 0


def test_stages_are_checked_when_parsed(capsys):
    assert run_cli.parse_args(["--stages", "data, model_b"]).stages == ("data", "model_b")
    with pytest.raises(SystemExit) as exit_info:
        run_cli.parse_args(["--stages", "data,modle_a"])
    assert exit_info.value.code == 2
    assert "unknown stage(s) modle_a; stages are data,model_a," in capsys.readouterr().err


def test_stage_names_match_the_pipeline():
    from hybrid_jax import pipeline

    assert run_cli.STAGE_NAMES == pipeline.STAGE_NAMES


def test_every_preset_has_a_description():
    assert set(config_lib.PRESET_DESCRIPTIONS) == set(config_lib.PRESETS)
    assert all(d.strip() and "\n" not in d for d in config_lib.PRESET_DESCRIPTIONS.values())


def test_help_names_defaults_presets_stages_and_data_sources():
    out = subprocess.run([sys.executable, "-m", "experiments.run", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "default: quick" in text and "runs/<preset>" in text
    for name, description in config_lib.PRESET_DESCRIPTIONS.items():
        assert f"{name:<12} {description}" in text
    assert " -> ".join(run_cli.STAGE_NAMES) in text
    for flag in ("--offline", "--set KEY=VALUE [KEY=VALUE ...]", "tfds:NAME", "stand-in", "--stages"):
        assert flag in text


def test_help_does_not_import_jax():
    code = ("import sys\nfrom experiments import run\ntry:\n    run.parse_args(['--help'])\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'tensorflow'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_more_devices_than_available_is_refused_before_any_work(tmp_path, capsys):
    import jax

    n = jax.device_count()
    workdir = tmp_path / "run"
    assert run_cli.main(["--preset", "test", "--workdir", str(workdir), "--devices", str(n + 1)]) == 2
    err = capsys.readouterr().err
    assert f"error: --devices {n + 1} asks for {n + 1} devices but {n} are available" in err
    assert f"use --devices {n} or fewer" in err
    assert not workdir.exists()  # refused before the work dir (or anything in it) was made
