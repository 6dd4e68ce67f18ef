"""The official CIFAR-10 tarball, downloaded once into a cache directory and checked by MD5.

The download streams into a temp file next to the target, hashing as it goes; only a file with
the right checksum is renamed into place, so a failed, cut or corrupt download leaves nothing
behind. `NetworkUnreachable` (no connection could be made) is told apart from every other
failure, so that callers can fall back to offline data when there is no network but stop on a
broken download. Tests point `url` at a local HTTP server; nothing here needs the internet.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from hybrid_jax import io
from hybrid_jax.data.images import DataError

log = logging.getLogger("hybrid_jax.data")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
TARBALL = "cifar-10-python.tar.gz"
TIMEOUT_S = 30.0  # per socket operation (connect, each read)
_CHUNK = 1 << 20
_INSTEAD = (f"Or download {TARBALL} yourself and pass it with --data PATH (or $HYBRID_JAX_CIFAR10), or run "
            f"with --offline to use the embedded stand-in images")


class NetworkUnreachable(DataError):
    """No connection to the download server could be made (no network, name not resolved, refused, timed out)."""


def default_cache_dir() -> Path:
    """Where downloads are kept: $XDG_CACHE_HOME/hybrid_jax or ~/.cache/hybrid_jax."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hybrid_jax"


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cached_cifar10(cache_dir: str | os.PathLike | None = None, md5: str | None = None) -> Path | None:
    """The tarball in `cache_dir` if it is there and matches `md5` (default: the official one); else None."""
    target = Path(cache_dir or default_cache_dir()).expanduser() / TARBALL
    if not target.is_file():
        return None
    if file_md5(target) != (md5 or CIFAR10_MD5):
        log.warning("the cached %s does not match its MD5 checksum; it is ignored (and replaced by the next "
                    "download)", target)
        return None
    return target


def download_cifar10(url: str | None = None, md5: str | None = None,
                     cache_dir: str | os.PathLike | None = None, *, timeout: float = TIMEOUT_S) -> Path:
    """Path of the verified CIFAR-10 tarball in `cache_dir`, downloading it only if absent.

    Raises NetworkUnreachable when no connection can be made, DataError for every other failure
    (HTTP error, broken transfer, wrong checksum, cache dir not writable); neither leaves a file.
    """
    url, md5 = url or CIFAR10_URL, md5 or CIFAR10_MD5
    cache = Path(cache_dir or default_cache_dir()).expanduser()
    if (cached := cached_cifar10(cache, md5)) is not None:
        log.info("using the cached CIFAR-10 tarball %s", cached)
        return cached
    target = cache / TARBALL
    log.info("downloading CIFAR-10 (about 163 MB, once) from %s to %s", url, target)
    start = time.monotonic()
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise DataError(f"could not download CIFAR-10 from {url}: the server answered HTTP {e.code} "
                        f"({e.reason}); nothing was kept. Try again later. {_INSTEAD}.") from None
    except (OSError, http.client.HTTPException) as e:  # URLError (DNS, refused, unreachable), timeouts
        reason = getattr(e, "reason", None) or e
        raise NetworkUnreachable(f"could not download CIFAR-10 from {url}: no connection ({reason}). Check the "
                                 f"network and run again. {_INSTEAD}.") from None
    except ValueError as e:  # not a URL
        raise DataError(f"could not download CIFAR-10: {url!r} is not a valid URL ({e}).") from None
    with response:
        size = _stream_verified(response, target, url, md5)
    seconds = time.monotonic() - start
    log.info("downloaded %.1f MB in %.1f s, MD5 verified: %s", size / 1e6, seconds, target)
    return target


def _stream_verified(response, target: Path, url: str, md5: str) -> int:
    """Copy the response into a temp file beside `target`, check its MD5, rename; return the size."""
    h, size = hashlib.md5(usedforsecurity=False), 0
    try:
        with io.atomic_open(target, suffix=".part") as f:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead
                    raise DataError(f"the download from {url} broke off after {size / 1e6:.1f} MB "
                                    f"({type(e).__name__}: {e}); nothing was kept. Run again to retry. "
                                    f"{_INSTEAD}.") from None
                if not chunk:
                    if missing := getattr(response, "length", None):  # closed before Content-Length was sent
                        raise DataError(f"the download from {url} broke off after {size / 1e6:.1f} MB "
                                        f"({missing / 1e6:.1f} MB missing); nothing was kept. Run again to "
                                        f"retry. {_INSTEAD}.")
                    break
                h.update(chunk)
                size += len(chunk)
                f.write(chunk)
            if (got := h.hexdigest()) != md5:
                raise DataError(f"the download from {url} has MD5 {got}, expected {md5} (damaged or wrong "
                                f"file); it was deleted. Run again to retry. {_INSTEAD}.")
    except OSError as e:  # the cache dir: not creatable, not writable, full
        raise DataError(f"cannot write the download to {target.parent} ({e.strerror or e}); free space or set "
                        f"XDG_CACHE_HOME to a writable folder; nothing was kept. {_INSTEAD}.") from None
    return size
