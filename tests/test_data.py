"""Tests of hybrid_jax.data: every source, every error, patches, blocks and batching.

Fast, deterministic and offline: CIFAR-10 is replaced by a tiny hand-built fixture in the
official format, tfds by `tfds.testing.mock_data`, the download by a local HTTP server and "no
network" by a closed port on 127.0.0.1. Every `resolve_source` call names its URL.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import pickle
import tarfile
import threading
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from _cifar import write_batch
from PIL import Image

from hybrid_jax import data
from hybrid_jax.data import DataError

NO_NETWORK_URL = "http://127.0.0.1:1/cifar-10-python.tar.gz"  # a closed port: the connection is refused

# Hand-built labels; no image of "frog" (6) anywhere, "dog" (5) in every file.
LABELS = {"data_batch_1": [5, 0, 5, 3, 5, 1], "data_batch_2": [2, 5, 5, 9], "test_batch": [5, 0, 5]}
DOG = 5


def _pixels(name: str) -> np.ndarray:
    """Known uint8 NHWC pixels of one fixture batch."""
    seed = sorted(LABELS).index(name)
    return np.random.default_rng(seed).integers(0, 256, (len(LABELS[name]), 32, 32, 3), dtype=np.uint8)


def _expected(names: list[str], label: int) -> np.ndarray:
    """Float images of `label` in the given batch files, in order."""
    x = np.concatenate([_pixels(n)[np.array(LABELS[n]) == label] for n in names])
    return x.astype(np.float32) / 127.5 - 1


def _write_pickle(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    """No $HYBRID_JAX_CIFAR10, and a download from the default URL could only reach a closed local port."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data.download, "CIFAR10_URL", NO_NETWORK_URL)


@pytest.fixture
def folder(tmp_path) -> Path:
    """An official-format cifar-10-batches-py/ folder with two train batches and a test batch."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name, labels in LABELS.items():
        write_batch(root / name, _pixels(name), labels)
    _write_pickle(root / "batches.meta", {b"label_names": [c.encode() for c in data.CIFAR10_CLASSES],
                                          b"num_cases_per_batch": 6, b"num_vis": 3072})
    return root


@pytest.fixture
def tarball(folder, tmp_path) -> Path:
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return path


# ----------------------------------------------------------------------------- official files


@pytest.mark.parametrize("which", ["folder", "tarball", "parent"])
def test_official_train_split(which, folder, tarball):
    path = {"folder": folder, "tarball": tarball, "parent": folder.parent}[which]
    got = data.load_images("dog", path=str(path), use_tfds=False)
    assert got.images.dtype == np.float32 and got.images.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(got.images, _expected(["data_batch_1", "data_batch_2"], DOG))
    assert not got.stand_in and "CIFAR-10" in got.source and "'dog'" in got.source


@pytest.mark.parametrize("use_tarball", [False, True])
def test_official_test_split_and_other_class(use_tarball, folder, tarball):
    path = tarball if use_tarball else folder
    got = data.load_images("airplane", split="test", path=path, use_tfds=False)
    np.testing.assert_array_equal(got.images, _expected(["test_batch"], 0))
    assert "split test" in got.source


def test_max_images_keeps_the_first(folder):
    got = data.load_images("dog", path=folder, use_tfds=False, max_images=3)
    np.testing.assert_array_equal(got.images, _expected(["data_batch_1", "data_batch_2"], DOG)[:3])


def test_env_var_is_used_when_no_path(folder, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(folder))
    for path in (None, ""):  # "" is DataConfig's "no path"
        got = data.load_images("truck", path=path, use_tfds=False)
        np.testing.assert_array_equal(got.images, _expected(["data_batch_2"], 9))


# ----------------------------------------------------------------------------- tfds


def test_tfds_source_when_prepared(tmp_path):
    # `mock_data` (tfds 4.9.10) patches `DatasetBuilder.as_data_source`, so `tfds.data_source`
    # returns random but deterministic records without any prepared files; load_images passes
    # download=False, so nothing is ever downloaded.
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        records = list(tfds.data_source("cifar10", split="train", download=False))
        label = int(records[0]["label"])
        expected = np.stack([r["image"] for r in records if int(r["label"]) == label])
        got = data.load_images(data.CIFAR10_CLASSES[label], tfds_data_dir=str(tmp_path))
        few = data.load_images(data.CIFAR10_CLASSES[label], tfds_data_dir=str(tmp_path), max_images=1)
    np.testing.assert_array_equal(got.images, expected.astype(np.float32) / 127.5 - 1)
    np.testing.assert_array_equal(few.images, got.images[:1])
    assert "tfds" in got.source and not got.stand_in


def test_tfds_not_prepared_falls_through(tmp_path, folder, caplog):
    """...in plain words: one info line saying what was tried, no warning (absl's about empty tfds folders
    included) and no exception's repr."""
    (tmp_path / "empty" / "cifar10" / "3.0.2").mkdir(parents=True)  # an empty variant folder: absl would warn
    with caplog.at_level(logging.INFO):
        got = data.load_images("dog", tfds_data_dir=str(tmp_path / "empty"), cache_dir=tmp_path)
    assert got.stand_in
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "stand-in" not in r.getMessage().lower()
                and "STAND-IN" not in r.getMessage()], [r.getMessage() for r in caplog.records]
    tried = [r.getMessage() for r in caplog.records if r.name == "hybrid_jax.data" and r.levelno == logging.INFO]
    assert tried and all("cifar10 is not prepared in the tensorflow-datasets data dir" in m for m in tried), tried
    assert not any("Error" in r.getMessage() for r in caplog.records)
    got = data.load_images("dog", path=folder, tfds_data_dir=str(tmp_path / "empty"))
    assert "folder" in got.source


def _serve_records(records):
    """`as_data_source_fn` for `tfds.testing.mock_data`: every split of every data set is `records`."""
    return lambda builder, *args, **kwargs: records


def _label_names(name: str, data_dir) -> list[str]:
    import tensorflow_datasets as tfds

    return tfds.builder(name, data_dir=str(data_dir)).info.features["label"].names


def test_tfds_any_dataset_by_name_resized_to_the_image_size(tmp_path):
    # A 64x64 data set: its class chosen by label name, every image Lanczos-resized to 32x32.
    tfds = pytest.importorskip("tensorflow_datasets")
    rng = np.random.default_rng(0)
    records = [{"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "label": i % 3} for i in range(9)]
    name = "imagenet_resized/64x64"
    with tfds.testing.mock_data(as_data_source_fn=_serve_records(records)):
        label_name = _label_names(name, tmp_path)[1]
        got = data.load_images(label_name, path=f"tfds:{name}", tfds_data_dir=str(tmp_path))
        few = data.load_images(label_name, "test", f"tfds:{name}", tfds_data_dir=str(tmp_path), max_images=2)
        small = data.load_images(label_name, path=f"tfds:{name}", tfds_data_dir=str(tmp_path), image_size=16)
    resized = [np.asarray(Image.fromarray(r["image"]).resize((32, 32), Image.Resampling.LANCZOS))
               for r in records[1::3]]
    np.testing.assert_array_equal(got.images, np.stack(resized).astype(np.float32) / 127.5 - 1)
    np.testing.assert_array_equal(few.images, got.images[:2])
    assert small.images.shape == (3, 16, 16, 3)
    assert not got.stand_in and name in got.source and repr(label_name) in got.source
    assert "64x64 images cropped/resized to 32x32" in got.source and "split test" in few.source


def test_class_all_of_a_tfds_data_set_is_every_label_name(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from hybrid_jax.config import DataConfig

    name = "imagenet_resized/64x64"
    with tfds.testing.mock_data(num_examples=4):
        got = data.resolve_all_classes(DataConfig(class_name="all", path=f"tfds:{name}"), data_dir=str(tmp_path))
        expected = _label_names(name, tmp_path)
    assert got.classes == tuple(expected) and got.num_classes == 1000
    for kept in (DataConfig(class_name="all"), DataConfig(class_name="dog", path=f"tfds:{name}")):
        assert data.resolve_all_classes(kept) == kept  # CIFAR-10's ten, or classes already named
    cifar = data.resolve_all_classes(DataConfig(class_name="all", path="tfds:cifar10"))
    assert cifar.classes == data.CIFAR10_CLASSES


def test_tfds_non_square_and_grey_images_are_centre_cropped_to_rgb(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    wide = np.zeros((40, 60, 3), np.uint8)
    wide[:, 10:50] = 255  # the centre square is white, the rest black
    tall = np.zeros((50, 32, 3), np.uint8)
    tall[9:41] = 255
    flowers = [{"image": wide, "label": 0}, {"image": tall, "label": 0}, {"image": wide * 0, "label": 1}]
    with tfds.testing.mock_data(as_data_source_fn=_serve_records(flowers)):
        got = data.load_images("pink primrose", path="tfds:oxford_flowers102", tfds_data_dir=str(tmp_path))
    np.testing.assert_array_equal(got.images, np.ones((2, 32, 32, 3), np.float32))
    grey = np.random.default_rng(1).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    with tfds.testing.mock_data(as_data_source_fn=_serve_records([{"image": grey, "label": 7}])):
        digit = data.load_images("7", path="tfds:mnist", tfds_data_dir=str(tmp_path))
    x = digit.images[0]
    assert x.shape == (32, 32, 3) and np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2])


def test_tfds_cifar10_by_name_uses_the_cifar10_class_names(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    records = [{"image": np.full((32, 32, 3), i, np.uint8), "label": i % 10} for i in range(30)]
    with tfds.testing.mock_data(as_data_source_fn=_serve_records(records)):
        got = data.load_images("dog", path="tfds:cifar10", tfds_data_dir=str(tmp_path))
    np.testing.assert_array_equal(got.images[:, 0, 0, 0] * 127.5 + 127.5, [5, 15, 25])
    assert "CIFAR-10" in got.source and "tfds" in got.source and "resized" not in got.source


def test_tfds_errors_say_what_to_do(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    empty = str(tmp_path / "empty")
    with pytest.raises(DataError, match=r"tfds:mnist is not prepared in .*tfds build mnist"):
        data.load_images("3", path="tfds:mnist", tfds_data_dir=empty)
    with pytest.raises(DataError, match="no data set 'no_such_set'"):
        data.load_images("3", path="tfds:no_such_set", tfds_data_dir=empty)
    with pytest.raises(DataError, match="needs a data set name"):
        data.load_images("3", path="tfds:", tfds_data_dir=empty)
    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(DataError, match="unknown class 'tulip' for tfds:oxford_flowers102.*pink primrose.*102 in"):
            data.load_images("tulip", path="tfds:oxford_flowers102", tfds_data_dir=empty)
    records = [{"image": np.zeros((32, 32, 3), np.uint8), "label": 0}]
    with tfds.testing.mock_data(as_data_source_fn=_serve_records(records)):
        with pytest.raises(DataError, match="no images of class 'dog', split train in tfds:cifar10"):
            data.load_images("dog", path="tfds:cifar10", tfds_data_dir=empty)


# ----------------------------------------------------------------------------- stand-in


def test_stand_in_default(caplog):
    with caplog.at_level(logging.WARNING, logger="hybrid_jax.data"):
        got = data.load_images("cat", use_tfds=False)
    x = got.images
    assert x.dtype == np.float32 and x.shape[1:] == (32, 32, 3) and len(x) >= 2000
    assert -1 <= x.min() < x.max() <= 1 and x.std() > 0.1
    assert got.stand_in and "stand-in" in got.source.lower() and "not cifar-10" in got.source.lower()
    assert "ignored" in got.source
    assert any(r.name == "hybrid_jax.data" and "stand-in" in r.message.lower() for r in caplog.records)
    again = data.load_images("dog", use_tfds=False, max_images=100)
    np.testing.assert_array_equal(again.images, x[:100])


def test_stand_in_at_64x64_is_cut_at_64_not_upsampled():
    from hybrid_jax.data import images, sources

    crops = sources._stand_in_crops(64)
    assert crops.shape[1:] == (64, 64, 3) and len(crops) >= 500
    got = sources._stand_in("dog", 16, 64).images
    np.testing.assert_array_equal(got, images.to_float(crops[:16]))  # the photographs' own pixels, no resize


# ----------------------------------------------------------------------------- download


class _Server:
    """Serves `payload` at http://127.0.0.1:<port>/cifar-10-python.tar.gz and counts requests.

    `status` != 200 answers that HTTP error; `cut` > 0 announces `cut` more bytes than it sends.
    """

    def __init__(self, payload: bytes, status: int = 200, cut: int = 0):
        self.payload, self.requests = payload, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                if status != 200:
                    self.send_error(status)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload) + cut))
                self.end_headers()
                self.wfile.write(server.payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/cifar-10-python.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def serve(tarball):
    """serve(status=200, cut=0) -> a running _Server of the fixture tarball, stopped after the test."""
    servers = []

    def start(**kw) -> _Server:
        servers.append(_Server(tarball.read_bytes(), **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.httpd.shutdown()
        s.httpd.server_close()


@pytest.fixture
def server(serve):
    return serve()


def test_download_verifies_and_reuses_cache(server, tmp_path, monkeypatch):
    md5, cache = hashlib.md5(server.payload).hexdigest(), tmp_path / "cache"
    path = data.download_cifar10(url=server.url, md5=md5, cache_dir=cache)
    assert path.read_bytes() == server.payload and server.requests == 1
    assert data.download_cifar10(url=server.url, md5=md5, cache_dir=cache) == path
    assert server.requests == 1
    monkeypatch.setattr(data.download, "CIFAR10_URL", server.url)
    monkeypatch.setattr(data.download, "CIFAR10_MD5", md5)
    got = data.load_images("dog", use_tfds=False, download=True, cache_dir=cache)
    np.testing.assert_array_equal(got.images, _expected(["data_batch_1", "data_batch_2"], DOG))
    assert server.requests == 1 and "tarball" in got.source


def test_download_wrong_checksum_keeps_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="MD5"):
        data.download_cifar10(url=server.url, md5="0" * 32, cache_dir=cache)
    assert server.requests == 1
    assert not cache.exists() or not any(cache.iterdir())


def test_download_into_an_unusable_cache_dir_is_a_data_error(server, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DataError, match="cannot write the download to .*XDG_CACHE_HOME"):
        data.download_cifar10(url=server.url, md5=hashlib.md5(server.payload).hexdigest(), cache_dir=blocker / "sub")
    assert blocker.read_text().startswith("a file") and not list(tmp_path.rglob("*.part"))


def test_download_unreachable_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="could not download"):
        data.download_cifar10(url="http://127.0.0.1:1/x.tar.gz", cache_dir=tmp_path)


# ----------------------------------------------------------------------------- resolve_source


@pytest.fixture
def online(monkeypatch, tmp_path) -> dict:
    """Keyword arguments of `resolve_source` with no local data (no tfds CIFAR-10, an empty cache),
    downloads allowed: $HYBRID_JAX_OFFLINE is unset here, so every call must name a local URL."""
    monkeypatch.delenv(data.OFFLINE_ENV_VAR, raising=False)
    return {"cache_dir": tmp_path / "cache", "tfds_data_dir": str(tmp_path / "no-tfds")}


def test_network_up_downloads_once_then_reuses_the_cache(server, online):
    md5 = hashlib.md5(server.payload).hexdigest()
    first = data.resolve_source(url=server.url, md5=md5, **online)
    assert server.requests == 1 and Path(first).read_bytes() == server.payload
    got = data.load_images("dog", path=first)
    np.testing.assert_array_equal(got.images, _expected(["data_batch_1", "data_batch_2"], DOG))
    assert not got.stand_in and "tarball" in got.source
    assert data.resolve_source(url=server.url, md5=md5, **online) == first  # the next run
    assert data.resolve_source(url=server.url, md5=md5, offline=True, **online) == first  # offline: the cache
    assert server.requests == 1
    assert [p.name for p in online["cache_dir"].iterdir()] == ["cifar-10-python.tar.gz"]  # no temp files


def test_network_down_falls_back_to_the_stand_in_with_a_warning(online, caplog):
    with caplog.at_level(logging.WARNING, logger="hybrid_jax.data"):
        source = data.resolve_source(url=NO_NETWORK_URL, **online)
        got = data.load_images("dog", path=source)
    assert source == data.STAND_IN and got.stand_in
    messages = [r.message for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("no connection" in m and "STAND-IN" in m and "--offline" in m for m in messages)
    assert any("stand-in" in m.lower() and "not cifar-10" in m.lower() for m in messages)
    assert not online["cache_dir"].exists()


@pytest.mark.parametrize("how", ["argument", "env"])
def test_offline_never_connects(server, online, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv(data.OFFLINE_ENV_VAR, "1")
    assert data.resolve_source(url=server.url, offline=how == "argument", **online) == data.STAND_IN
    assert server.requests == 0


@pytest.mark.parametrize("failure", ["corrupt", "cut", "http-404"])
def test_failed_download_is_an_error_and_keeps_nothing(serve, online, failure):
    server = serve(cut=10_000) if failure == "cut" else serve(status=404) if failure == "http-404" else serve()
    md5 = "0" * 32 if failure == "corrupt" else hashlib.md5(server.payload).hexdigest()
    match = {"corrupt": "has MD5 .* it was deleted", "cut": "broke off .* MB missing", "http-404": "HTTP 404"}[failure]
    with pytest.raises(DataError, match=match) as err:
        data.resolve_source(url=server.url, md5=md5, **online)
    assert "--data PATH" in str(err.value) and "--offline" in str(err.value)
    assert server.requests == 1
    assert not online["cache_dir"].exists() or not any(online["cache_dir"].iterdir())


def test_a_damaged_cached_file_is_downloaded_again(server, online):
    md5 = hashlib.md5(server.payload).hexdigest()
    online["cache_dir"].mkdir()
    (online["cache_dir"] / "cifar-10-python.tar.gz").write_bytes(server.payload[:100])
    assert data.resolve_source(url=NO_NETWORK_URL, md5=md5, offline=True, **online) == data.STAND_IN
    path = data.resolve_source(url=server.url, md5=md5, **online)
    assert Path(path).read_bytes() == server.payload and server.requests == 1


def test_given_path_env_var_and_class_come_before_any_download(server, online, monkeypatch, folder):
    assert data.resolve_source("tfds:mnist", url=server.url, **online) == "tfds:mnist"
    assert data.resolve_source(folder, url=server.url, **online) == str(folder)
    assert data.resolve_source(data.STAND_IN, url=server.url, **online) == data.STAND_IN
    monkeypatch.setenv(data.ENV_VAR, str(folder))
    assert data.resolve_source("", url=server.url, **online) == str(folder)
    monkeypatch.delenv(data.ENV_VAR)
    with pytest.raises(DataError, match="unknown class 'dogs'"):
        data.resolve_source(class_name="dogs", url=server.url, **online)
    assert server.requests == 0


def test_cifar10_prepared_in_tfds_comes_before_the_download(server, online):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        source = data.resolve_source(url=server.url, **online)
        label = int(next(iter(tfds.data_source("cifar10", split="train", download=False)))["label"])
        got = data.load_images(data.CIFAR10_CLASSES[label], path=source, tfds_data_dir=online["tfds_data_dir"])
    assert source == "tfds:cifar10" and server.requests == 0
    assert "tfds" in got.source and not got.stand_in


# ----------------------------------------------------------------------------- errors


def test_unknown_class_lists_the_valid_names(folder):
    with pytest.raises(DataError, match="unknown class 'dogs'.*airplane.*truck"):
        data.load_images("dogs", path=folder)


def test_unknown_split(folder):
    with pytest.raises(DataError, match="unknown split 'val'"):
        data.load_images("dog", split="val", path=folder)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load_images("dog", path=tmp_path / "nope")


def test_folder_without_batches(tmp_path):
    with pytest.raises(DataError, match="neither"):
        data.load_images("dog", path=tmp_path)


def test_missing_split_in_folder(folder):
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="test split"):
        data.load_images("dog", split="test", path=folder)


def test_empty_class(folder):
    with pytest.raises(DataError, match="no images of class 'frog'"):
        data.load_images("frog", path=folder)


@pytest.mark.parametrize("content", [
    b"\x00garbage, not a pickle" * 10,
    pickle.dumps({b"data": np.zeros((6, 3072), np.uint8)}, protocol=2),  # no b"labels"
    pickle.dumps({b"data": np.zeros((6, 100), np.uint8), b"labels": [0] * 6}, protocol=2),  # bad shape
    pickle.dumps({b"data": os.getcwd, b"labels": [0]}, protocol=2),  # a non-array global is refused
], ids=["garbage", "missing-key", "bad-shape", "foreign-global"])
def test_corrupt_batch_file(folder, content):
    (folder / "data_batch_1").write_bytes(content)
    with pytest.raises(DataError, match="data_batch_1 .* is corrupt"):
        data.load_images("dog", path=folder)


@pytest.mark.parametrize("cut", [0.5, 0.02])
def test_truncated_tarball(tarball, cut):
    raw = tarball.read_bytes()
    tarball.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(DataError, match="not a readable CIFAR-10 tarball"):
        data.load_images("dog", path=tarball)


def test_not_a_tarball(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match="not a readable CIFAR-10 tarball"):
        data.load_images("dog", path=path)


def test_check_images():
    good = np.zeros((2, 32, 32, 3), np.float32)
    data.check_images(good)
    data.check_images(jnp.asarray(good))
    with pytest.raises(DataError, match=r"batch must be .*\[N, 32, 32, 3\].*got shape \(2, 3, 32, 32\)"):
        data.check_images(good.transpose(0, 3, 1, 2), "batch")
    with pytest.raises(DataError, match="got dtype uint8"):
        data.check_images(good.astype(np.uint8))
    with pytest.raises(DataError, match="max 255"):
        data.check_images(good + 255)
    bad = good.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="1 NaN"):
        data.check_images(bad)


def test_image_size_is_a_parameter(folder):
    got = data.load_images("dog", path=folder, image_size=16)
    assert got.images.shape == (5, 16, 16, 3) and not got.stand_in
    stand_in = data.load_images("dog", path=data.STAND_IN, image_size=48, max_images=4)
    assert stand_in.images.shape == (4, 48, 48, 3) and stand_in.stand_in and "48x48" in stand_in.source
    with pytest.raises(DataError, match="must be a float32 array \\[N, 16, 16, 3\\]"):
        data.check_images(np.zeros((1, 32, 32, 3), np.float32), size=16)


def test_the_names_other_modules_use_are_there():
    for name in ("load_images", "resolve_source", "DataError", "Images", "check_images", "IMAGE_SHAPE", "IMAGE_SIZE",
                 "CIFAR10_CLASSES", "ENV_VAR", "OFFLINE_ENV_VAR", "STAND_IN", "download_cifar10", "default_cache_dir",
                 "steps_per_epoch", "batches", "batch_at", "holdout_split", "_stand_in_crops"):
        assert hasattr(data, name), name
    assert data.IMAGE_SHAPE == (data.IMAGE_SIZE,) * 2 + (3,)


# ----------------------------------------------------------------------------- batching


def test_batches_deterministic_and_shuffled():
    x = np.arange(23)
    epoch0 = list(data.batches(x, 5, key=1, epoch=0))
    assert len(epoch0) == data.steps_per_epoch(23, 5) == 4
    assert all(b.shape == (5,) for b in epoch0)
    assert len(set(np.concatenate(epoch0).tolist())) == 20
    np.testing.assert_array_equal(epoch0, list(data.batches(x, 5, key=1, epoch=0)))
    assert not np.array_equal(epoch0, list(data.batches(x, 5, key=1, epoch=1)))
    assert not np.array_equal(epoch0, list(data.batches(x, 5, key=2, epoch=0)))


def test_batch_at_matches_uninterrupted_run():
    x = np.arange(23)
    run = [b for epoch in range(3) for b in data.batches(x, 5, key=7, epoch=epoch)]
    for step, expected in enumerate(run):
        np.testing.assert_array_equal(data.batch_at(x, 5, key=7, step=step), expected)


def test_small_set_wraps_around():
    assert data.steps_per_epoch(3, 8) == 1
    (batch,) = list(data.batches(np.arange(3), 8, key=0, epoch=0))
    assert batch.shape == (8,) and set(batch.tolist()) == {0, 1, 2}


def test_holdout_split():
    train, held = data.holdout_split(np.arange(10), 3)
    np.testing.assert_array_equal(train, np.arange(7))
    np.testing.assert_array_equal(held, [7, 8, 9])
    assert len(data.holdout_split(np.arange(10), 0)[1]) == 0
    with pytest.raises(DataError, match="leaves 0 for training"):
        data.holdout_split(np.arange(10), 10)


# ----------------------------------------------------------------------------- real dev data

DEV_DATA = Path(os.environ.get("HYBRID_JAX_DEV_DATA")
                or Path(__file__).resolve().parents[2] / "shared/data/cifar-10-batches-py")


def test_real_dev_data_has_475_dogs():
    if not DEV_DATA.is_dir():
        pytest.skip(f"dev copy of CIFAR-10 not found at {DEV_DATA}")
    got = data.load_images("dog", path=DEV_DATA, use_tfds=False)
    assert got.images.shape == (475, 32, 32, 3) and not got.stand_in
    assert -1 <= got.images.min() < got.images.max() <= 1
    with pytest.raises(DataError, match="test split"):
        data.load_images("dog", split="test", path=DEV_DATA)
