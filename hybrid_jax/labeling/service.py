"""The labeling service: what the labeling page does, without HTTP (no Flask in this module).

- pure logic: the random-looking side order (`left_model`, `side_model`), answer -> label
  (`answer_to_label`), the next seed (`next_seed`), the progress summary (`progress`) and the three
  changes of a `Snapshot` (`record_answer`, `remove_answer`, `skip_seed`), each returning a new one;
- files: the seeds npz (`load_seeds`) and the labels CSV with its sidecar (`LabelStore`);
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
from hybrid_jax.labels import LabelError, parse_seed, read_labels_table, write_labels

log = logging.getLogger(__name__)

ANSWERS = ("left", "right", "same")
SIDES = ("left", "right")
MODELS = ("A", "B")
COLUMNS = ("answer", "left")  # extra CSV columns written after seed,label
DISPLAY_SIZE = 256  # target on-screen size in px of each image (integer nearest-neighbour factor)
RERUN = "Re-run the pipeline's seeds stage."


class ApiError(Exception):
    """A request that cannot be served; becomes a JSON error response with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ----------------------------------------------------------------------------- pure logic

def left_model(seed: int, run_seed: int = 0) -> str:
    """Which model ("A" or "B") is shown on the left for `seed`: random-looking, deterministic.

    A hash of (run seed, seed), so the same seed shows the same sides after a reload or a server
    restart with the same run seed, independent of numpy versions and of the seed order.
    """
    digest = hashlib.sha256(f"hybrid_jax.labeling:{int(run_seed)}:{int(seed)}".encode()).digest()
    return MODELS[digest[0] & 1]


def side_model(side: str, left: str) -> str:
    """The model shown on `side` ("left"/"right") when `left` ("A"/"B") is on the left."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if left not in MODELS:
        raise ValueError(f"left must be one of {MODELS}, got {left!r}")
    return left if side == "left" else MODELS[1 - MODELS.index(left)]


def answer_to_label(answer: str, left: str) -> str:
    """`A_needed` iff the side that showed A was chosen as clearly better, else `cheap_ok`."""
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {ANSWERS}, got {answer!r}")
    if answer == "same":
        return "cheap_ok"
    return "A_needed" if side_model(answer, left) == "A" else "cheap_ok"


def to_png(image: np.ndarray, size: int = DISPLAY_SIZE) -> bytes:
    """An [H, W, 3] image in [-1, 1] as PNG bytes, upscaled by the largest integer factor that
    keeps it within `size` px (at least 1), with nearest-neighbour resampling (no blur)."""
    h, w = np.shape(image)[:2]
    return io.png_bytes(image, scale=max(1, int(size) // max(h, w)))


# ----------------------------------------------------------------------------- the seeds file

@dataclass(frozen=True)
class Seeds:
    seeds: np.ndarray  # int64 [N], in the order the page presents them
    images_a: np.ndarray  # [N, H, W, 3]
    images_b: np.ndarray
    index: dict  # seed -> row
    path: Path | None = None  # the file they were read from (for messages)
    classes: np.ndarray | None = None  # int [N] each seed's class (the seeds file's "labels"); None: one class
    class_names: tuple[str, ...] = ()  # the run's classes, indexed by `classes`

    def class_of(self, seed: int) -> str | None:
        """The seed's class name with several classes, else None."""
        if self.classes is None or len(self.class_names) < 2:
            return None
        return self.class_names[int(self.classes[self.index[seed]])]

    def image(self, seed: int, model: str) -> np.ndarray:
        return (self.images_a if model == "A" else self.images_b)[self.index[seed]]

    def check(self, seed: int) -> int:
        """`seed` if it is one of these seeds, else ApiError(404)."""
        if seed not in self.index:
            raise ApiError(404, f"seed {seed} is not one of the {len(self.seeds)} seeds of this run "
                                f"({self.path})")
        return seed


def load_seeds(path: str | os.PathLike, class_names: tuple[str, ...] = ()) -> Seeds:
    """Read and check a seeds npz; raises ApiError(404/422) saying what is wrong and what to do.
    `class_names`: the run's classes, which the file's per-seed "labels" index (several: shown per seed)."""
    path = Path(path)
    if not path.is_file():
        raise ApiError(404, f"{path} not found: no generated seeds in this work dir. Run the "
                            "pipeline's seeds stage first (python -m experiments.run) or pass the "
                            "right --workdir.")
    try:
        arrays = io.read_npz(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ApiError(422, f"{path} cannot be read ({type(e).__name__}: {e}). {RERUN}") from None
    missing = [k for k in ("seeds", "images_a", "images_b") if k not in arrays]
    if missing:
        raise ApiError(422, f"{path} has no array(s) {', '.join(missing)} (it has "
                            f"{', '.join(sorted(arrays)) or 'none'}). {RERUN}")
    seeds, a, b = arrays["seeds"], arrays["images_a"], arrays["images_b"]
    problems = _seeds_problems(seeds, a, b)
    if problems:
        raise ApiError(422, f"{path}: {'; '.join(problems)}. {RERUN}")
    classes = arrays.get("labels") if class_names else None
    if classes is not None and (classes.shape != seeds.shape or np.any(classes >= len(class_names))):
        raise ApiError(422, f"{path}: its classes ('labels') do not match the run's {len(class_names)} class(es) "
                            f"({', '.join(class_names)}). {RERUN}")
    seeds = seeds.astype(np.int64)
    return Seeds(seeds, a, b, {int(s): i for i, s in enumerate(seeds)}, path, classes, tuple(class_names))


def run_class_names(workdir: str | os.PathLike) -> tuple[str, ...]:
    """The classes of the run in `workdir` (its run.json), () when it has none."""
    from hybrid_jax.config import DataConfig

    path = Path(workdir) / "run.json"
    if not path.is_file():
        return ()
    return DataConfig(class_name=io.read_json(path)["config"]["data"]["class_name"]).classes


def _seeds_problems(seeds: np.ndarray, a: np.ndarray, b: np.ndarray) -> list[str]:
    problems = []
    if seeds.ndim != 1 or seeds.dtype.kind not in "iu":
        problems.append(f"'seeds' must be a 1-D integer array, got {seeds.dtype} {seeds.shape}")
    for name, arr in (("images_a", a), ("images_b", b)):
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype.kind != "f":
            problems.append(f"'{name}' must be float [N, H, W, 3], got {arr.dtype} {arr.shape}")
        elif seeds.ndim == 1 and arr.shape[0] != seeds.shape[0]:
            problems.append(f"'{name}' has {arr.shape[0]} images for {seeds.shape[0]} seeds")
    if not problems and a.shape != b.shape:
        problems.append(f"'images_a' {a.shape} and 'images_b' {b.shape} differ in shape")
    if not problems and len(np.unique(seeds)) != len(seeds):
        problems.append("'seeds' has duplicates")
    return problems


# ----------------------------------------------------------------------------- labels: state and changes

@dataclass
class Snapshot:
    labels: dict = field(default_factory=dict)  # seed -> label
    extra: dict = field(default_factory=dict)  # seed -> {column: value}, columns beyond seed,label
    history: list = field(default_factory=list)  # labeled seeds, oldest answer first (this page's)
    skipped: list = field(default_factory=list)  # unlabeled seeds the person skipped, in skip order


def next_seed(seeds: Seeds, snap: Snapshot) -> int | None:
    """The first unlabeled, unskipped seed in file order; then the skipped ones in skip order."""
    skipped = set(snap.skipped)
    for s in seeds.seeds.tolist():
        if s not in snap.labels and s not in skipped:
            return s
    return snap.skipped[0] if snap.skipped else None


def progress(seeds: Seeds, snap: Snapshot, run_seed: int = 0) -> dict:
    """What the page shows: counts, the cheap_ok share and the next seed with its sides."""
    n_cheap = sum(v == "cheap_ok" for v in snap.labels.values())
    labeled = len(snap.labels)
    nxt = next_seed(seeds, snap)
    by_class = {}  # with several classes: each class's seeds, labeled and cheap_ok
    for s in seeds.seeds.tolist():
        if (name := seeds.class_of(s)) is not None:
            row = by_class.setdefault(name, {"total": 0, "labeled": 0, "cheap_ok": 0})
            row["total"] += 1
            row["labeled"] += s in snap.labels
            row["cheap_ok"] += snap.labels.get(s) == "cheap_ok"
    return {
        "total": len(seeds.seeds),
        "labeled": labeled,
        "cheap_ok": n_cheap,
        "A_needed": labeled - n_cheap,
        "cheap_ok_share": (n_cheap / labeled) if labeled else None,
        "skipped": list(snap.skipped),
        "can_undo": bool(snap.history),
        "done": nxt is None,
        "by_class": by_class,
        "next": None if nxt is None else {
            "seed": nxt, "class": seeds.class_of(nxt), "left": left_model(nxt, run_seed),
            "right": side_model("right", left_model(nxt, run_seed)),
            "position": seeds.index[nxt], "skipped": nxt in snap.skipped},
    }


def record_answer(snap: Snapshot, seed: int, answer: str, left: str) -> tuple[Snapshot, dict]:
    """`snap` with `answer` to `seed` (shown with `left` on the left) as its newest answer."""
    label = answer_to_label(answer, left)
    saved = {"seed": seed, "label": label, "answer": answer, "left": left,
             "relabeled": seed in snap.labels}
    return Snapshot(
        labels={**snap.labels, seed: label},
        extra={**snap.extra, seed: {**snap.extra.get(seed, {}), "answer": answer, "left": left}},
        history=[h for h in snap.history if h != seed] + [seed],
        skipped=[k for k in snap.skipped if k != seed],
    ), saved


def remove_answer(snap: Snapshot, seed: int | None = None) -> tuple[Snapshot, dict]:
    """`snap` without the answer to `seed` (None: the newest answer this page recorded)."""
    if seed is None:
        if not snap.history:
            raise ApiError(409, "nothing to undo: no answer recorded by this page"
                           + (" (labels imported from elsewhere can be undone by seed: "
                              '{"seed": N})' if snap.labels else ""))
        seed = snap.history[-1]
    elif seed not in snap.labels:
        raise ApiError(409, f"seed {seed} has no label to undo")
    labels, extra = dict(snap.labels), dict(snap.extra)
    undone = {"seed": seed, "label": labels.pop(seed), **extra.pop(seed, {})}
    return replace(snap, labels=labels, extra=extra,
                   history=[h for h in snap.history if h != seed]), undone


def skip_seed(snap: Snapshot, seed: int) -> Snapshot:
    """`snap` with the unlabeled `seed` moved behind all other unlabeled seeds."""
    if seed in snap.labels:
        raise ApiError(409, f"seed {seed} is already labeled ({snap.labels[seed]}); undo it first to change it")
    return replace(snap, skipped=[k for k in snap.skipped if k != seed] + [seed])


# ----------------------------------------------------------------------------- the labels store

class LabelStore:
    """The human labels CSV and its sidecar, changed only under the lock file."""

    def __init__(self, workdir: str | os.PathLike):
        self.dir = Path(workdir) / "labels"
        self.csv = self.dir / "human.csv"
        self.progress = self.dir / "human.progress.json"
        self.lock_path = self.dir / ".human.csv.lock"

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
        """The current labels (validated against the known seeds) and the sidecar.

        Raises ApiError(409) when the CSV is invalid (e.g. edited by hand): the page then refuses
        to change it rather than overwrite rows it could not read.
        """
        labels, extra = {}, {}
        if self.csv.exists():
            try:
                labels, extra = read_labels_table(self.csv, known_seeds=seeds.seeds.tolist())
            except LabelError as e:
                raise ApiError(409, f"{e} The labeling page changes nothing until the file is fixed.") from None
        history, skipped = self._read_progress()
        history = _dedup_keep_last([s for s in history if s in labels])
        skipped = _dedup_keep_last([s for s in skipped if s in seeds.index and s not in labels])
        return Snapshot(labels, extra, history, skipped)

    def _read_progress(self) -> tuple[list, list]:
        if not self.progress.exists():
            return [], []
        try:
            side = json.loads(self.progress.read_text())
            return [int(s) for s in side.get("history", [])], [int(s) for s in side.get("skipped", [])]
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.warning("ignoring unreadable %s (%s): undo history and skips start afresh", self.progress, e)
            return [], []

    def write(self, snap: Snapshot) -> None:
        """CSV first (the data that matters), then the sidecar; both atomic."""
        if snap.labels:
            columns = list(COLUMNS) + [c for e in snap.extra.values() for c in e if c not in COLUMNS]
            columns = list(dict.fromkeys(columns))
            extra = {s: {c: snap.extra.get(s, {}).get(c, "") for c in columns} for s in snap.labels}
            write_labels(self.csv, snap.labels, extra)
        else:
            io.write_text(self.csv, ",".join(("seed", "label", *COLUMNS)) + "\n")
        io.write_json(self.progress, {"history": snap.history, "skipped": snap.skipped})


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


# ----------------------------------------------------------------------------- the service

class LabelingService:
    """The labeling page's operations over one work dir; each returns JSON-ready data.

    `run_seed` fixes the random left/right order. The seeds file is read on first use and re-read
    when it changes, so a missing or broken file gives an ApiError per request instead of a crash.
    Every change is a read-modify-write of the labels under the store's exclusive lock.
    """

    def __init__(self, workdir: str | os.PathLike, run_seed: int = 0, display_size: int = DISPLAY_SIZE):
        self.workdir = Path(workdir)
        self.seeds_path = self.workdir / "seeds" / "seeds.npz"
        self.store = LabelStore(self.workdir)
        self.run_seed = int(run_seed)
        self.display_size = int(display_size)
        self._cached: tuple | None = None  # (file key, Seeds)
        self._cache_lock = threading.Lock()

    def seeds(self) -> Seeds:
        """The checked seeds file (cached while its mtime, size and inode stay the same)."""
        try:
            st = self.seeds_path.stat()
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            key = None
        with self._cache_lock:
            if key is None or self._cached is None or self._cached[0] != key:
                self._cached = None
                # ApiError when missing or broken
                self._cached = (key, load_seeds(self.seeds_path, run_class_names(self.workdir)))
            return self._cached[1]

    def state(self) -> dict:
        seeds = self.seeds()
        with self.store.locked(exclusive=False):
            snap = self.store.read(seeds)
        return progress(seeds, snap, self.run_seed)

    def image_png(self, seed: int | str, side: str) -> bytes:
        """PNG of the image shown on `side` for `seed` (an int, or the text of the image address)."""
        seeds = self.seeds()
        try:
            seed = parse_seed(seed)
        except ValueError:
            raise ApiError(400, f"seed {seed!r} in the image address is not an integer") from None
        if side not in SIDES:
            raise ApiError(404, f"side {side!r} is not one of {', '.join(SIDES)}")
        seed = seeds.check(seed)
        img = seeds.image(seed, side_model(side, left_model(seed, self.run_seed)))
        if not np.all(np.isfinite(img)):
            raise ApiError(422, f"the image of seed {seed} on the {side} has NaN or infinite pixels; "
                                "re-run the pipeline's seeds stage")
        return to_png(img, self.display_size)

    def label(self, data: dict) -> dict:
        """Record {seed, answer[, left]}; `left` (what the page showed) must match this server's."""
        seeds = self.seeds()
        check_fields(data, {"seed", "answer", "left"})
        seed = seed_field(data, seeds)
        answer = data.get("answer")
        if answer not in ANSWERS:
            raise ApiError(400, f"'answer' must be one of {', '.join(ANSWERS)}, got {json.dumps(answer)}")
        left = left_model(seed, self.run_seed)
        if "left" in data and data["left"] != left:
            raise ApiError(409, f"the page showed {data['left']!r} on the left of seed {seed}, but this "
                                f"server shows {left!r} there (another run seed?). Reload the page.")
        snap, saved = self._change(seeds, lambda s: record_answer(s, seed, answer, left))
        return {"saved": saved, "state": progress(seeds, snap, self.run_seed)}

    def undo(self, data: dict | None = None) -> dict:
        """Remove the newest answer of this page, or the answer to {seed}."""
        seeds = self.seeds()
        data = data or {}
        check_fields(data, {"seed"})
        seed = seed_field(data, seeds, required=False)
        snap, undone = self._change(seeds, lambda s: remove_answer(s, seed))
        return {"undone": undone, "state": progress(seeds, snap, self.run_seed)}

    def skip(self, data: dict) -> dict:
        """Put the unlabeled {seed} after all other unlabeled seeds."""
        seeds = self.seeds()
        check_fields(data, {"seed"})
        seed = seed_field(data, seeds)
        snap, _ = self._change(seeds, lambda s: (skip_seed(s, seed), None))
        return {"skipped": seed, "state": progress(seeds, snap, self.run_seed)}

    def _change(self, seeds: Seeds, step) -> tuple[Snapshot, object]:
        """Read, apply `step` (Snapshot -> (Snapshot, result)) and write, all under the lock."""
        with self.store.locked(exclusive=True):
            snap, result = step(self.store.read(seeds))
            self.store.write(snap)
        return snap, result
