"""Bad input gets a clear error before any work starts, and writes never leave a half file."""

from __future__ import annotations

import errno
import os

import pytest

from experiments import run as run_cli
from hybrid_jax import config as config_lib
from hybrid_jax import io


@pytest.mark.parametrize("key, value, message", [
    ("model_a.steps_per_block", "-1", "steps_per_block must be > 0"),
    ("router.threshold", "1.5", r"threshold must be in \[0, 1\]"),
    ("router.prefix_steps", "16", "prefix_steps=16 must be below the 16 AR steps"),
    ("router.prefix_steps", "0", "prefix_steps must be >= 1"),
    ("geometry.patch_size", "7", "image_size=32 must be divisible by geometry.patch_size=7"),
    ("geometry.block_size", "12", "image_size=32 must be divisible by geometry.block_size=12"),
    ("geometry.image_size", "40", "image_size=40 must be divisible by geometry.block_size=16"),
    ("geometry.patch_size", "32", "at least 2 patches"),
    ("geometry.channels", "1", "channels must be 3"),
    ("model_a.unet.channel_mults", "1,2,2,2,2,2,2", "must be divisible by 64, the downsampling of model_a.unet"),
    ("corrector.start_step", "101", "start_step must be in"),
    ("model_b.train.epochs", "0", "epochs must be > 0"),
    ("model_a.unet.dtype", "float16", "dtype must be float32 or bfloat16"),
])
def test_invalid_config_is_rejected_with_the_field_named(key, value, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.override(config_lib.get_preset("paper"), key, value)


def test_override_parses_types_and_rejects_unknown_fields():
    cfg = config_lib.apply_overrides(config_lib.get_preset("test"),
                                     ["model_a.unet.channel_mults=1,2,4", "router.ablation=false", "router.threshold=0.6"])
    assert cfg.model_a.unet.channel_mults == (1, 2, 4) and cfg.router.ablation is False and cfg.router.threshold == 0.6
    with pytest.raises(config_lib.ConfigError, match="no field 'epoch'"):
        config_lib.override(cfg, "model_a.train.epoch", "3")
    with pytest.raises(config_lib.ConfigError, match="key=value"):
        config_lib.apply_overrides(cfg, ["model_a.train.epochs"])
    with pytest.raises(config_lib.ConfigError, match="unknown preset"):
        config_lib.get_preset("huge")


def test_cli_reports_bad_input_and_exits_2(tmp_path, capsys):
    rc = run_cli.main(["--preset", "test", "--workdir", str(tmp_path / "w"), "--class", "unicorn", "--data",
                       str(tmp_path / "missing")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not exist" in err or "unicorn" in err
    assert not (tmp_path / "w").exists()  # checked before any work (every input: tests/test_cli.py)
    rc = run_cli.main(["--preset", "test", "--workdir", str(tmp_path / "w2"), "--set", "router.threshold=2"])
    assert rc == 2 and "threshold" in capsys.readouterr().err


def test_read_only_location_gives_a_clear_error_and_keeps_old_files(tmp_path, monkeypatch):
    target = tmp_path / "ro" / "out.json"
    io.write_json(target, {"v": 1})

    def read_only(*_a, **_k):  # what a read-only mount answers (chmod does not stop root)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(io.tempfile, "mkstemp", read_only)
    with pytest.raises(io.WriteError, match="read-only"):
        io.write_json(target, {"v": 2})
    assert io.read_json(target) == {"v": 1}


def test_full_disk_gives_a_clear_error_and_keeps_old_files(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    io.write_text(target, "old")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(io.WriteError, match="disk is full"):
        io.write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind
