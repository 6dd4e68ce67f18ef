"""The labeling service: what the labeling page does, without HTTP (no Flask in this module).

The page shows pairs: a seed's reference image beside one candidate option's image of the same
seed (`pairs`: what is compared, from which files). Two sources feed it: `BINARY`, the brief's A vs
B from the seeds stage, keyed by seed (`labels/human.csv`, read by the router stage); `OPTIONS`,
the allocation study's reference (A at its full budget) against every other option, keyed by
(seed, option) (`labels/human_options.csv`, read by the allocate stage). An item's key is its seed
(one candidate) or (seed, option name).

- pure logic: the random-looking side order (`left_model`, `side_model`), answer -> label
  (`answer_to_label`), the next item (`next_seed`), the progress summary (`progress`) and the three
  changes of a `Snapshot` (`record_answer`, `remove_answer`, `skip_seed`), each returning a new one;
- files: the labels CSV with its sidecar (`LabelStore`);
- `LabelingService`: the page's operations (state, image, label, undo, skip) over one work dir,
  taking and returning plain JSON-like data and raising `ApiError` for anything it refuses.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hybrid_jax import io
from hybrid_jax.labeling.errors import ApiError
from hybrid_jax.labeling.pairs import BINARY, MODELS, Seeds, Source, run_class_names
from hybrid_jax.quality.labels import SEED_KEY, LabelError, parse_seed, read_keyed_labels, write_keyed_labels

log = logging.getLogger(__name__)

ANSWERS = ("left", "right", "same")
SIDES = ("left", "right")
COLUMNS = ("answer", "left")  # extra CSV columns written after seed,label
DISPLAY_SIZE = 256  # target on-screen size in px of each image (integer nearest-neighbour factor)


# ----------------------------------------------------------------------------- pure logic

def left_model(seed: int, run_seed: int = 0, pair: tuple[str, str] = MODELS) -> str:
    """Which of `pair` (reference, candidate) is shown on the left for `seed`: random-looking, deterministic.

    A hash of (run seed, seed, candidate), so the same item shows the same sides after a reload or a
    server restart with the same run seed, independent of numpy versions and of the item order.
    """
    digest = hashlib.sha256(f"hybrid_jax.labeling:{int(run_seed)}:{int(seed)}:{pair[1]}".encode()).digest()
    return pair[digest[0] & 1]


def side_model(side: str, left: str, pair: tuple[str, str] = MODELS) -> str:
    """The option shown on `side` ("left"/"right") when `left` (one of `pair`) is on the left."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if left not in pair:
        raise ValueError(f"left must be one of {pair}, got {left!r}")
    return left if side == "left" else pair[1 - pair.index(left)]


def answer_to_label(answer: str, left: str, pair: tuple[str, str] = MODELS) -> str:
    """`A_needed` iff the side that showed the reference (`pair[0]`) was chosen as clearly better, else
    `cheap_ok` (the candidate is about as good, or better)."""
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {ANSWERS}, got {answer!r}")
    if answer == "same":
        return "cheap_ok"
    return "A_needed" if side_model(answer, left, pair) == pair[0] else "cheap_ok"


def key_fields(key) -> dict:
    """An item key as JSON fields: {"seed": s} or {"seed": s, "option": name}."""
    return {"seed": key[0], "option": key[1]} if isinstance(key, tuple) else {"seed": key}


def to_png(image: np.ndarray, size: int = DISPLAY_SIZE) -> bytes:
    """An [H, W, 3] image in [-1, 1] as PNG bytes, upscaled by the largest integer factor that
    keeps it within `size` px (at least 1), with nearest-neighbour resampling (no blur)."""
    h, w = np.shape(image)[:2]
    return io.png_bytes(image, scale=max(1, int(size) // max(h, w)))


# ----------------------------------------------------------------------------- labels: state and changes

@dataclass
class Snapshot:
    labels: dict = field(default_factory=dict)  # item key -> label
    extra: dict = field(default_factory=dict)  # item key -> {column: value}, columns beyond the key and label
    history: list = field(default_factory=list)  # labeled items, oldest answer first (this page's)
    skipped: list = field(default_factory=list)  # unlabeled items the person skipped, in skip order


def next_seed(seeds: Seeds, snap: Snapshot):
    """The first unlabeled, unskipped item in page order; then the skipped ones in skip order."""
    skipped = set(snap.skipped)
    for k in seeds.items():
        if k not in snap.labels and k not in skipped:
            return k
    return snap.skipped[0] if snap.skipped else None


def _counts(keys, labels: dict) -> dict:
    keys = list(keys)
    return {"total": len(keys), "labeled": sum(k in labels for k in keys),
            "cheap_ok": sum(labels.get(k) == "cheap_ok" for k in keys)}


def progress(seeds: Seeds, snap: Snapshot, run_seed: int = 0) -> dict:
    """What the page shows: counts (overall, per class with several, per candidate option), the cheap_ok share
    and the next item with its sides."""
    n_cheap = sum(v == "cheap_ok" for v in snap.labels.values())
    labeled = len(snap.labels)
    nxt = next_seed(seeds, snap)
    items = seeds.items()
    class_of = {k: seeds.class_of(seeds.split(k)[0]) for k in items}
    by_class = {name: _counts((k for k in items if class_of[k] == name), snap.labels)
                for name in dict.fromkeys(class_of.values()) if name is not None}
    by_option = {c: _counts((k for k in items if seeds.split(k)[1] == c), snap.labels) for c in seeds.candidates}
    return {
        "total": len(items),
        "labeled": labeled,
        "cheap_ok": n_cheap,
        "A_needed": labeled - n_cheap,
        "cheap_ok_share": (n_cheap / labeled) if labeled else None,
        "skipped": [_key_to_json(k) for k in snap.skipped],  # seeds, or [seed, option] pairs
        "can_undo": bool(snap.history),
        "done": nxt is None,
        "reference": seeds.reference,
        "by_class": by_class,
        "by_option": by_option,
        "next": None if nxt is None else _shown(seeds, nxt, run_seed, items.index(nxt), nxt in snap.skipped),
    }


def _shown(seeds: Seeds, key, run_seed: int, position: int, skipped: bool) -> dict:
    seed, option = seeds.split(key)
    pair = (seeds.reference, option)
    left = left_model(seed, run_seed, pair)
    return {**key_fields(key), "option": option, "class": seeds.class_of(seed), "left": left,
            "right": side_model("right", left, pair), "position": position, "skipped": skipped}


def record_answer(snap: Snapshot, key, answer: str, left: str, pair: tuple[str, str] = MODELS
                  ) -> tuple[Snapshot, dict]:
    """`snap` with `answer` to item `key` (shown with `left`, one of `pair`, on the left) as its newest answer."""
    label = answer_to_label(answer, left, pair)
    saved = {**key_fields(key), "label": label, "answer": answer, "left": left, "relabeled": key in snap.labels}
    return Snapshot(
        labels={**snap.labels, key: label},
        extra={**snap.extra, key: {**snap.extra.get(key, {}), "answer": answer, "left": left}},
        history=[h for h in snap.history if h != key] + [key],
        skipped=[k for k in snap.skipped if k != key],
    ), saved


def remove_answer(snap: Snapshot, key=None) -> tuple[Snapshot, dict]:
    """`snap` without the answer to item `key` (None: the newest answer this page recorded)."""
    if key is None:
        if not snap.history:
            raise ApiError(409, "nothing to undo: no answer recorded by this page"
                           + (" (labels imported from elsewhere can be undone by seed: "
                              '{"seed": N})' if snap.labels else ""))
        key = snap.history[-1]
    elif key not in snap.labels:
        raise ApiError(409, f"{_describe(key)} has no label to undo")
    labels, extra = dict(snap.labels), dict(snap.extra)
    undone = {**key_fields(key), "label": labels.pop(key), **extra.pop(key, {})}
    return replace(snap, labels=labels, extra=extra,
                   history=[h for h in snap.history if h != key]), undone


def skip_seed(snap: Snapshot, key) -> Snapshot:
    """`snap` with the unlabeled item `key` moved behind all other unlabeled items."""
    if key in snap.labels:
        raise ApiError(409, f"{_describe(key)} is already labeled ({snap.labels[key]}); undo it first to change it")
    return replace(snap, skipped=[k for k in snap.skipped if k != key] + [key])


def _describe(key) -> str:
    return " ".join(f"{k} {v if k == 'seed' else repr(v)}" for k, v in key_fields(key).items())


# ----------------------------------------------------------------------------- the labels store

class LabelStore:
    """A page's labels CSV (`labels/<name>.csv`, keyed by the columns `key`) and its sidecar, changed only
    under the lock file."""

    def __init__(self, workdir: str | os.PathLike, name: str = "human", key: tuple[str, ...] = SEED_KEY):
        self.dir = Path(workdir) / "labels"
        self.csv = self.dir / f"{name}.csv"
        self.progress = self.dir / f"{name}.progress.json"
        self.lock_path = self.dir / f".{name}.csv.lock"
        self.key = tuple(key)

    @contextlib.contextmanager
    def locked(self, exclusive: bool):
        """flock on the lock file (per open file description, so threads of one server exclude
        each other too). A shared lock on a work dir without labels yet takes no lock."""
        if not exclusive and not self.dir.is_dir():
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def read(self, seeds: Seeds) -> Snapshot:
        """The current labels (validated against the known items) and the sidecar.

        Raises ApiError(409) when the CSV is invalid (e.g. edited by hand): the page then refuses
        to change it rather than overwrite rows it could not read.
        """
        labels, extra = {}, {}
        items = seeds.items()
        if self.csv.exists():
            try:
                rows = read_keyed_labels(self.csv, self.key, known={_as_tuple(k) for k in items})
            except LabelError as e:
                raise ApiError(409, f"{e} The labeling page changes nothing until the file is fixed.") from None
            labels, extra = ({_from_tuple(k): v for k, v in table.items()} for table in rows)
        history, skipped = self._read_progress()
        known = set(items)
        history = _dedup_keep_last([k for k in history if k in labels])
        skipped = _dedup_keep_last([k for k in skipped if k in known and k not in labels])
        return Snapshot(labels, extra, history, skipped)

    def _read_progress(self) -> tuple[list, list]:
        if not self.progress.exists():
            return [], []
        try:
            side = json.loads(self.progress.read_text())
            history, skipped = ([_key_from_json(k) for k in side.get(f, [])] for f in ("history", "skipped"))
            return history, skipped
        except (OSError, ValueError, TypeError, AttributeError, IndexError) as e:
            log.warning("ignoring unreadable %s (%s): undo history and skips start afresh", self.progress, e)
            return [], []

    def write(self, snap: Snapshot) -> None:
        """CSV first (the data that matters), then the sidecar; both atomic."""
        if snap.labels:
            columns = list(COLUMNS) + [c for e in snap.extra.values() for c in e if c not in COLUMNS]
            columns = list(dict.fromkeys(columns))
            extra = {_as_tuple(k): {c: snap.extra.get(k, {}).get(c, "") for c in columns} for k in snap.labels}
            write_keyed_labels(self.csv, {_as_tuple(k): v for k, v in snap.labels.items()}, extra, self.key)
        else:
            io.write_text(self.csv, ",".join((*self.key, "label", *COLUMNS)) + "\n")
        io.write_json(self.progress, {"history": [_key_to_json(k) for k in snap.history],
                                      "skipped": [_key_to_json(k) for k in snap.skipped]})


def _as_tuple(key) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def _from_tuple(key: tuple):
    return key if len(key) > 1 else key[0]


def _key_to_json(key):
    return list(key) if isinstance(key, tuple) else key


def _key_from_json(value):
    return (int(value[0]), str(value[1])) if isinstance(value, list) else int(value)


def _dedup_keep_last(seq: list) -> list:
    seen, out = set(), []
    for s in reversed(seq):
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out[::-1]


# ----------------------------------------------------------------------------- request fields

def check_fields(data: dict, allowed: set) -> None:
    """ApiError(400) naming the fields of `data` that are not in `allowed`."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed))}")


def seed_field(data: dict, seeds: Seeds, required: bool = True) -> int | None:
    """The known seed in `data["seed"]` (an integer or a string of digits); None if absent and optional."""
    if "seed" not in data:
        if required:
            raise ApiError(400, "missing field 'seed' (an integer seed of this run)")
        return None
    try:
        value = parse_seed(data["seed"])
    except ValueError:
        raise ApiError(400, f"'seed' must be an integer, got {json.dumps(data['seed'])}") from None
    return seeds.check(value)


def item_field(data: dict, seeds: Seeds, required: bool = True):
    """The item key named by `data` ("seed", and "option" where the page has several candidates)."""
    seed = seed_field(data, seeds, required)
    if seed is None:
        return None
    return seeds.key(seed, seeds.option(data.get("option")))


# ----------------------------------------------------------------------------- the service

class LabelingService:
    """The labeling page's operations over one work dir; each returns JSON-ready data.

    `run_seed` fixes the random left/right order; `source` says what is compared (`BINARY`: A vs B per seed;
    `OPTIONS`: the allocation study's reference vs every other option). The images are read on first use
    and re-read when they change, so a missing or broken file gives an ApiError per request instead of a
    crash. Every change is a read-modify-write of the labels under the store's exclusive lock.
    """

    def __init__(self, workdir: str | os.PathLike, run_seed: int = 0, display_size: int = DISPLAY_SIZE,
                 source: Source = BINARY):
        self.workdir = Path(workdir)
        self.source = source
        self.seeds_path = self.workdir / source.watch
        self.store = LabelStore(self.workdir, source.name, source.key)
        self.run_seed = int(run_seed)
        self.display_size = int(display_size)
        self._cached: tuple | None = None  # (file key, Seeds)
        self._cache_lock = threading.Lock()

    def seeds(self) -> Seeds:
        """The checked images (cached while the watched file's mtime, size and inode stay the same)."""
        try:
            st = self.seeds_path.stat()
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            key = None
        with self._cache_lock:
            if key is None or self._cached is None or self._cached[0] != key:
                self._cached = None
                # ApiError when missing or broken
                self._cached = (key, self.source.load(self.workdir, run_class_names(self.workdir)))
            return self._cached[1]

    def state(self) -> dict:
        seeds = self.seeds()
        with self.store.locked(exclusive=False):
            snap = self.store.read(seeds)
        return progress(seeds, snap, self.run_seed)

    def image_png(self, seed: int | str, side: str, option: str | None = None) -> bytes:
        """PNG of the image shown on `side` for `seed` (an int, or the text of the image address) beside the
        candidate `option` (None: the only one)."""
        seeds = self.seeds()
        try:
            seed = parse_seed(seed)
        except ValueError:
            raise ApiError(400, f"seed {seed!r} in the image address is not an integer") from None
        if side not in SIDES:
            raise ApiError(404, f"side {side!r} is not one of {', '.join(SIDES)}")
        seed, option = seeds.check(seed), seeds.option(option)
        pair = (seeds.reference, option)
        img = seeds.image(seed, side_model(side, left_model(seed, self.run_seed, pair), pair))
        if not np.all(np.isfinite(img)):
            raise ApiError(422, f"the image of seed {seed} on the {side} has NaN or infinite pixels; "
                                "re-run the pipeline's seeds stage")
        return to_png(img, self.display_size)

    def label(self, data: dict) -> dict:
        """Record {seed[, option], answer[, left]}; `left` (what the page showed) must match this server's."""
        seeds = self.seeds()
        check_fields(data, {"seed", "option", "answer", "left"})
        key = item_field(data, seeds)
        answer = data.get("answer")
        if answer not in ANSWERS:
            raise ApiError(400, f"'answer' must be one of {', '.join(ANSWERS)}, got {json.dumps(answer)}")
        seed, option = seeds.split(key)
        pair = (seeds.reference, option)
        left = left_model(seed, self.run_seed, pair)
        if "left" in data and data["left"] != left:
            raise ApiError(409, f"the page showed {data['left']!r} on the left of {_describe(key)}, but this "
                                f"server shows {left!r} there (another run seed?). Reload the page.")
        snap, saved = self._change(seeds, lambda s: record_answer(s, key, answer, left, pair))
        return {"saved": saved, "state": progress(seeds, snap, self.run_seed)}

    def undo(self, data: dict | None = None) -> dict:
        """Remove the newest answer of this page, or the answer to {seed[, option]}."""
        seeds = self.seeds()
        data = data or {}
        check_fields(data, {"seed", "option"})
        key = item_field(data, seeds, required=False)
        snap, undone = self._change(seeds, lambda s: remove_answer(s, key))
        return {"undone": undone, "state": progress(seeds, snap, self.run_seed)}

    def skip(self, data: dict) -> dict:
        """Put the unlabeled {seed[, option]} after all other unlabeled items."""
        seeds = self.seeds()
        check_fields(data, {"seed", "option"})
        key = item_field(data, seeds)
        snap, _ = self._change(seeds, lambda s: (skip_seed(s, key), None))
        return {"skipped": seeds.split(key)[0], **({"option": key[1]} if isinstance(key, tuple) else {}),
                "state": progress(seeds, snap, self.run_seed)}

    def _change(self, seeds: Seeds, step) -> tuple[Snapshot, object]:
        """Read, apply `step` (Snapshot -> (Snapshot, result)) and write, all under the lock."""
        with self.store.locked(exclusive=True):
            snap, result = step(self.store.read(seeds))
            self.store.write(snap)
        return snap, result
