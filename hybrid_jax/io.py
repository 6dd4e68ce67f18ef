"""Atomic file writes: a file is either complete or absent, never half written."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np


class WriteError(OSError):
    """A write failed (read-only location, full disk, ...); earlier outputs are intact."""


@contextlib.contextmanager
def _explain_os_errors(path: Path):
    try:
        yield
    except OSError as e:
        if isinstance(e, WriteError):
            raise
        what = {errno.ENOSPC: "the disk is full", errno.EROFS: "the location is read-only",
                errno.EACCES: "permission denied", errno.EDQUOT: "the disk quota is exceeded"}.get(
                    e.errno, e.strerror or str(e))
        raise WriteError(e.errno or 0, f"cannot write {path}: {what}. Free space or choose another "
                         f"--workdir; files written earlier are unchanged.") from None


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, suffix: str = ".tmp"):
    """A binary file that becomes `path` when the block ends (temp file in the same folder, fsync, rename)
    and is deleted, leaving `path` as it was, when the block raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (`atomic_open`). In a run of several processes only process 0
    writes (`sharding.is_writer`): callers keep what they wrote, not read it back."""
    from hybrid_jax import sharding

    path = Path(path)
    if not sharding.is_writer():
        return path
    with _explain_os_errors(path), atomic_open(path) as f:
        f.write(data)
    return path


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def write_npz(path, **arrays) -> Path:
    return write_bytes(path, npz_bytes(**arrays))


def read_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_npz_pair(directory, npz_name: str, json_name: str, arrays: dict, meta: dict) -> Path:
    """Arrays in `npz_name`, then `meta` in `json_name` with the npz's SHA-256 (`trees_sha256`), both atomic:
    `read_npz_pair` detects a torn or edited pair."""
    data = npz_bytes(**arrays)
    write_bytes(Path(directory) / npz_name, data)
    write_json(Path(directory) / json_name, {**meta, "trees_sha256": hashlib.sha256(data).hexdigest()})
    return Path(directory)


def read_npz_pair(directory, npz_name: str, json_name: str, fmt: int, what: str, error: type[Exception],
                  rerun: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) written by `write_npz_pair`, with meta["format"] == fmt; `error` says what is wrong and
    `rerun` (e.g. "re-run the router stage") what to do."""
    meta_path, npz_path = Path(directory) / json_name, Path(directory) / npz_name
    if not meta_path.exists() or not npz_path.exists():
        raise error(f"no saved {what} in {directory} (need {json_name} and {npz_name}); {rerun}")
    meta = read_json(meta_path)
    if meta.get("format") != fmt:
        raise error(f"{meta_path} has format {meta.get('format')!r}, this code reads {fmt}; {rerun}")
    if hashlib.sha256(npz_path.read_bytes()).hexdigest() != meta.get("trees_sha256"):
        raise error(f"{npz_path} does not match {meta_path} (interrupted save or edited file); {rerun}")
    return meta, read_npz(npz_path)


def png_bytes(image, scale: int = 1) -> bytes:
    """An [H, W, 3] image with values in [-1, 1] as 8-bit RGB PNG bytes.

    Values are clipped to [-1, 1] (NaN becomes 0, mid grey) and mapped to 0..255 with rounding;
    `scale` > 1 enlarges the image by that integer factor with nearest-neighbour resampling (no blur).
    """
    from PIL import Image

    pixels = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), -1.0, 1.0)
    pixels = np.round((pixels + 1.0) * 127.5).astype(np.uint8)
    if int(scale) > 1:
        pixels = np.repeat(np.repeat(pixels, int(scale), axis=0), int(scale), axis=1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
