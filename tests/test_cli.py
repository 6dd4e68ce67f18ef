"""Tests of the command line `python -m experiments.run`: flags in, config overrides out.

Fast: nothing here trains or compiles; the only JAX import is the stage-name check.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_stages_are_checked_against_the_presets_before_any_work(tmp_path, capsys):
    assert run_cli.parse_args(["--stages", "data, model_b"]).stages == ("data", "model_b")
    workdir = tmp_path / "run"
    assert run_cli.main(["--preset", "test", "--workdir", str(workdir), "--stages", "data,modle_a"]) == 2
    assert "error: unknown stage(s) modle_a; stages are data,model_a," in capsys.readouterr().err
    assert not workdir.exists()


def test_list_stages_prints_the_pipelines_stages_of_the_preset(capsys):
    from hybrid_jax.study import pipeline

    assert run_cli.main(["--preset", "test", "--list-stages"]) == 0
    names = capsys.readouterr().out.split()
    assert tuple(names) == pipeline.stage_names(config_lib.get_preset("test"))
    assert names[:4] == ["data", "model_a", "model_b", "corrector"] and names[-1] == "report"


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
    for flag in ("--offline", "--set KEY=VALUE [KEY=VALUE ...]", "tfds:NAME", "stand-in", "--stages", "--list-stages"):
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


# ----------------------------------------------------------------------------- inputs checked before any work

def _snapshot(root: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()} if root.exists() else {}


@pytest.fixture
def no_stage_may_run(monkeypatch):
    """Every stage of the pipeline replaced by one that fails the test if it starts."""
    import dataclasses

    from hybrid_jax.study import pipeline

    def ran(run):
        raise AssertionError("a stage ran before the inputs were checked")

    stages = pipeline.stages
    monkeypatch.setattr(pipeline, "stages", lambda cfg: tuple(dataclasses.replace(s, run=ran) for s in stages(cfg)))


def _bad_labels(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


BAD_INPUTS = {  # name -> (extra argv given tmp_path, words the error must say)
    "labels: a bad label": (lambda t: ["--labels", str(_bad_labels(t, "seed,label\n0,cheap_ok\n1,maybe\n"))],
                            ["bad.csv, line 3", "'maybe'"]),
    "labels: an unknown seed": (lambda t: ["--labels", str(_bad_labels(t, "seed,label\n0,cheap_ok\n40,A_needed\n"))],
                                ["bad.csv, line 3", "40", "40 seeds of this run"]),
    "labels: a duplicate seed": (lambda t: ["--labels", str(_bad_labels(t, "seed,label\n0,cheap_ok\n0,A_needed\n"))],
                                 ["bad.csv, line 3", "labeled twice"]),
    "labels: no such file": (lambda t: ["--labels", str(t / "nowhere.csv")], ["nowhere.csv"]),
    "data: no such path": (lambda t: ["--data", str(t / "missing")], ["missing", "does not exist"]),
    "data: not CIFAR-10": (lambda t: ["--data", str(_bad_labels(t, "not a tarball"))], ["bad.csv"]),
    "class: unknown": (lambda t: ["--class", "unicorn"], ["unicorn", "dog"]),
    "set: out of range": (lambda t: ["--set", "router.threshold=2"], ["router.threshold", "2"]),
    "set: unknown field": (lambda t: ["--set", "router.thresh=0.5"], ["router.thresh"]),
    "set: EMA decay above 1": (lambda t: ["--set", "model_a.train.ema_decay=1.5"], ["train.ema_decay", "1.5"]),
    "set: negative warmup": (lambda t: ["--set", "corrector.train.warmup_steps=-3"], ["train.warmup_steps", "-3"]),
    "set: inception weights missing": (lambda t: ["--set", f"labeler.inception_weights={t / 'w.pth'}"],
                                       ["labeler.inception_weights", "w.pth"]),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_a_bad_input_is_refused_before_any_stage_and_writes_nothing(name, tmp_path, capsys, no_stage_may_run,
                                                                   monkeypatch):
    monkeypatch.setenv("HYBRID_JAX_OFFLINE", "1")
    argv, words = BAD_INPUTS[name]
    workdir = tmp_path / "run"
    assert run_cli.main(["--preset", "test", "--workdir", str(workdir), *argv(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and all(w in err for w in words), err
    assert not workdir.exists()  # not even run.log


def test_a_work_dir_of_another_config_or_an_unwritable_one_is_refused_and_left_as_it_was(tmp_path, capsys,
                                                                                       no_stage_may_run):
    from hybrid_jax.study import pipeline

    workdir = tmp_path / "run"
    pipeline.open_run(config_lib.override(config_lib.get_preset("test"), "model_a.steps_per_block", "5"), workdir)
    (workdir / "run.log").write_text("the first run's log\n")
    before = _snapshot(workdir)
    assert run_cli.main(["--preset", "test", "--workdir", str(workdir)]) == 2
    assert "model_a.steps_per_block" in capsys.readouterr().err
    assert _snapshot(workdir) == before
    afile = tmp_path / "a_file"
    afile.write_text("")
    assert run_cli.main(["--preset", "test", "--workdir", str(afile / "run")]) == 2
    assert "not a writable folder" in capsys.readouterr().err and afile.read_text() == ""


def test_the_labels_file_is_checked_again_when_the_labels_stage_reads_it(tmp_path):
    """A file that passed the check before the run may change before the labels stage imports it."""
    from hybrid_jax.quality import labels as labels_lib
    from hybrid_jax.study import pipeline
    from hybrid_jax.study.stages import labels as labels_stage

    csv = _bad_labels(tmp_path, "seed,label\n0,cheap_ok\n")
    run = pipeline.Run(config_lib.get_preset("test"), tmp_path / "run", labels_csv=str(csv))
    labels_stage.check(run)
    csv.write_text("seed,label\n0,maybe\n")
    with pytest.raises(labels_lib.LabelError, match="line 2"):
        labels_stage._import_human_labels(run, np.arange(40))
