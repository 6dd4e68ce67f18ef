"""The labeling page: a person compares Model A's and Model B's image of each seed in a browser.

`create_app(workdir, seed=0)` returns a Flask app that serves one page and a small JSON API over
a run's work dir:

- input: `<workdir>/seeds/seeds.npz` with `seeds` [N], `images_a` and `images_b` [N, H, W, 3]
  in [-1, 1] (written by the pipeline's seeds stage);
- output: `<workdir>/labels/human.csv` with header `seed,label,answer,left` (read by the router
  stage through `hybrid_jax.labels.read_labels`), plus a small sidecar
  `<workdir>/labels/human.progress.json` that remembers the order of the answers (for undo) and
  the skipped seeds.

Each seed's two images are shown in a random left/right order so that the person judges the
images, not the models; the order is a pure function of (seed, run seed), so a reload shows the
same sides. The answer ("left", "right" or "same") maps to the label: `A_needed` iff the side
that shows A was chosen as clearly better, `cheap_ok` otherwise (about the same, or B better).

Every change is a read-modify-write of the CSV under an exclusive `fcntl.flock` on
`<workdir>/labels/.human.csv.lock` (so two tabs or two servers cannot lose each other's answers)
and an atomic file replacement (so a crash leaves the old file or the new one, never half).
Bad requests get a JSON error `{"error": ..., "status": ...}` with a 4xx status and change
nothing on disk.

Endpoints:
    GET  /                       the page (inline HTML + JS, keyboard driven)
    GET  /api/state              progress and the next seed to label with its side order
    GET  /img/<seed>/<side>.png  side in {left, right}: the image shown on that side, upscaled
    POST /api/label {seed, answer[, left]}  answer in {left, right, same}
    POST /api/undo  [{seed}]     remove the most recent answer (or the given seed's)
    POST /api/skip  {seed}       put the seed after all other unlabeled seeds
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io as _stdio
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybrid_jax import io
from hybrid_jax.labels import LabelError, read_labels, write_labels

log = logging.getLogger(__name__)

ANSWERS = ("left", "right", "same")
SIDES = ("left", "right")
MODELS = ("A", "B")
COLUMNS = ("answer", "left")  # extra CSV columns written after seed,label
DISPLAY_SIZE = 256  # target on-screen size in px of each image (integer nearest-neighbour factor)


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
    from PIL import Image

    image = np.asarray(image, dtype=np.float32)
    h, w = image.shape[:2]
    factor = max(1, int(size) // max(h, w))
    pixels = np.round((np.clip(np.nan_to_num(image), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    img = Image.fromarray(pixels)
    if factor > 1:
        img = img.resize((w * factor, h * factor), Image.Resampling.NEAREST)
    buf = _stdio.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- the seeds file

@dataclass(frozen=True)
class Seeds:
    seeds: np.ndarray  # int64 [N], in the order the page presents them
    images_a: np.ndarray  # [N, H, W, 3]
    images_b: np.ndarray
    index: dict  # seed -> row

    def image(self, seed: int, model: str) -> np.ndarray:
        return (self.images_a if model == "A" else self.images_b)[self.index[seed]]


def load_seeds(path: str | os.PathLike) -> Seeds:
    """Read and check a seeds npz; raises ApiError(404/422) saying what is wrong and what to do."""
    path = Path(path)
    if not path.is_file():
        raise ApiError(404, f"{path} not found: no generated seeds in this work dir. Run the "
                            "pipeline's seeds stage first (python -m experiments.run) or pass the "
                            "right --workdir.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ApiError(422, f"{path} cannot be read ({type(e).__name__}: {e}). Re-run the "
                            "pipeline's seeds stage to rewrite it.") from None
    missing = [k for k in ("seeds", "images_a", "images_b") if k not in arrays]
    if missing:
        raise ApiError(422, f"{path} has no array(s) {', '.join(missing)} (it has "
                            f"{', '.join(sorted(arrays)) or 'none'}). Re-run the pipeline's seeds stage.")
    seeds, a, b = arrays["seeds"], arrays["images_a"], arrays["images_b"]
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
    if problems:
        raise ApiError(422, f"{path}: {'; '.join(problems)}. Re-run the pipeline's seeds stage.")
    seeds = seeds.astype(np.int64)
    return Seeds(seeds, a, b, {int(s): i for i, s in enumerate(seeds)})


# ----------------------------------------------------------------------------- the labels store

@dataclass
class Snapshot:
    labels: dict  # seed -> label
    extra: dict  # seed -> {column: value}, every column of the file beyond seed,label
    history: list  # labeled seeds, oldest answer first (only those this page recorded)
    skipped: list  # unlabeled seeds the person skipped, in skip order


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
                labels = read_labels(self.csv, known_seeds=seeds.seeds.tolist())
            except LabelError as e:
                raise ApiError(409, f"{e} The labeling page changes nothing until the file is fixed.") from None
            extra = self._read_extra(labels)
        history, skipped = [], []
        if self.progress.exists():
            try:
                side = json.loads(self.progress.read_text())
                history = [int(s) for s in side.get("history", [])]
                skipped = [int(s) for s in side.get("skipped", [])]
            except (OSError, ValueError, TypeError, AttributeError) as e:
                log.warning("ignoring unreadable %s (%s): undo history and skips start afresh", self.progress, e)
        history = _dedup_keep_last([s for s in history if s in labels])
        skipped = _dedup_keep_last([s for s in skipped if s in seeds.index and s not in labels])
        return Snapshot(labels, extra, history, skipped)

    def _read_extra(self, labels: dict) -> dict:
        rows = list(csv.reader(_stdio.StringIO(self.csv.read_text(encoding="utf-8-sig"))))
        header = [h.strip() for h in rows[0]]
        extra = {}
        for fields in rows[1:]:
            if not fields or all(not f.strip() for f in fields):
                continue
            seed = int(fields[0].strip())
            if seed in labels:
                extra[seed] = dict(zip(header[2:], fields[2:]))
        return extra

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


def next_seed(seeds: Seeds, snap: Snapshot) -> int | None:
    """The first unlabeled, unskipped seed in file order; then the skipped ones in skip order."""
    skipped = set(snap.skipped)
    for s in seeds.seeds.tolist():
        if s not in snap.labels and s not in skipped:
            return s
    return snap.skipped[0] if snap.skipped else None


# ----------------------------------------------------------------------------- the Flask app

def create_app(workdir: str | os.PathLike, seed: int = 0, display_size: int = DISPLAY_SIZE):
    """The labeling app for `workdir`; `seed` (the run seed) fixes the random left/right order.

    The seeds file is read on first use (and re-read when it changes), so a missing or broken
    file gives JSON errors on the API instead of a crash; `load_seeds` checks it up front.
    """
    from flask import Flask, Response, jsonify, request
    from werkzeug.exceptions import HTTPException

    workdir = Path(workdir)
    seeds_path = workdir / "seeds" / "seeds.npz"
    store = LabelStore(workdir)
    run_seed = int(seed)
    cache: dict = {}
    cache_lock = threading.Lock()

    app = Flask(__name__)
    app.config.update(WORKDIR=str(workdir), RUN_SEED=run_seed)
    app.json.sort_keys = False

    def get_seeds() -> Seeds:
        try:
            st = seeds_path.stat()
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            key = None
        with cache_lock:
            if key is None or cache.get("key") != key:
                cache.clear()
                cache["seeds"] = load_seeds(seeds_path)  # raises ApiError when missing or broken
                cache["key"] = key
            return cache["seeds"]

    def state(seeds: Seeds, snap: Snapshot) -> dict:
        n_cheap = sum(v == "cheap_ok" for v in snap.labels.values())
        labeled = len(snap.labels)
        nxt = next_seed(seeds, snap)
        return {
            "total": len(seeds.seeds),
            "labeled": labeled,
            "cheap_ok": n_cheap,
            "A_needed": labeled - n_cheap,
            "cheap_ok_share": (n_cheap / labeled) if labeled else None,
            "skipped": list(snap.skipped),
            "can_undo": bool(snap.history),
            "done": nxt is None,
            "next": None if nxt is None else {
                "seed": nxt, "left": left_model(nxt, run_seed),
                "right": side_model("right", left_model(nxt, run_seed)),
                "position": seeds.index[nxt], "skipped": nxt in snap.skipped},
        }

    def body() -> dict:
        data = request.get_json(force=True, silent=True)
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object, e.g. "
                                '{"seed": 3, "answer": "left"}')
        return data

    def seed_of(data: dict, seeds: Seeds, required: bool = True) -> int | None:
        if "seed" not in data:
            if required:
                raise ApiError(400, "missing field 'seed' (an integer seed of this run)")
            return None
        value = data["seed"]
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                value = int(value)
            else:
                raise ApiError(400, f"'seed' must be an integer, got {json.dumps(value)}")
        return check_seed(value, seeds)

    def check_seed(value: int, seeds: Seeds) -> int:
        if value not in seeds.index:
            raise ApiError(404, f"seed {value} is not one of the {len(seeds.seeds)} seeds of this run "
                                f"({seeds_path})")
        return value

    def check_fields(data: dict, allowed: set) -> None:
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed))}")

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        return jsonify(error=e.message, status=e.status), e.status

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        return jsonify(error=f"{e.name}: {e.description}", status=e.code), e.code

    @app.errorhandler(io.WriteError)
    def _write_error(e: io.WriteError):
        return jsonify(error=str(e), status=507), 507

    @app.get("/")
    def page():
        return Response(PAGE, mimetype="text/html")

    @app.get("/api/state")
    def api_state():
        seeds = get_seeds()
        with store.locked(exclusive=False):
            snap = store.read(seeds)
        return jsonify(state(seeds, snap))

    @app.get("/img/<seed_text>/<side>.png")
    def image(seed_text: str, side: str):
        seeds = get_seeds()
        if not seed_text.lstrip("+-").isdigit():
            raise ApiError(400, f"seed {seed_text!r} in the image address is not an integer")
        if side not in SIDES:
            raise ApiError(404, f"side {side!r} is not one of {', '.join(SIDES)}")
        s = check_seed(int(seed_text), seeds)
        model = side_model(side, left_model(s, run_seed))
        img = seeds.image(s, model)
        if not np.all(np.isfinite(img)):
            raise ApiError(422, f"the image of seed {s} on the {side} has NaN or infinite pixels; "
                                "re-run the pipeline's seeds stage")
        resp = Response(to_png(img, display_size), mimetype="image/png")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.post("/api/label")
    def api_label():
        seeds = get_seeds()
        data = body()
        check_fields(data, {"seed", "answer", "left"})
        s = seed_of(data, seeds)
        answer = data.get("answer")
        if answer not in ANSWERS:
            raise ApiError(400, f"'answer' must be one of {', '.join(ANSWERS)}, got {json.dumps(answer)}")
        left = left_model(s, run_seed)
        if "left" in data and data["left"] != left:
            raise ApiError(409, f"the page showed {data['left']!r} on the left of seed {s}, but this "
                                f"server shows {left!r} there (another run seed?). Reload the page.")
        label = answer_to_label(answer, left)
        with store.locked(exclusive=True):
            snap = store.read(seeds)
            relabeled = s in snap.labels
            snap.labels[s] = label
            snap.extra[s] = {**snap.extra.get(s, {}), "answer": answer, "left": left}
            snap.history = [h for h in snap.history if h != s] + [s]
            snap.skipped = [k for k in snap.skipped if k != s]
            store.write(snap)
        saved = {"seed": s, "label": label, "answer": answer, "left": left, "relabeled": relabeled}
        return jsonify(saved=saved, state=state(seeds, snap))

    @app.post("/api/undo")
    def api_undo():
        seeds = get_seeds()
        raw = request.get_data(cache=True)
        data = body() if raw.strip() else {}
        check_fields(data, {"seed"})
        s = seed_of(data, seeds, required=False)
        with store.locked(exclusive=True):
            snap = store.read(seeds)
            if s is None:
                if not snap.history:
                    raise ApiError(409, "nothing to undo: no answer recorded by this page"
                                   + (" (labels imported from elsewhere can be undone by seed: "
                                      '{"seed": N})' if snap.labels else ""))
                s = snap.history[-1]
            elif s not in snap.labels:
                raise ApiError(409, f"seed {s} has no label to undo")
            undone = {"seed": s, "label": snap.labels.pop(s), **snap.extra.pop(s, {})}
            snap.history = [h for h in snap.history if h != s]
            store.write(snap)
        return jsonify(undone=undone, state=state(seeds, snap))

    @app.post("/api/skip")
    def api_skip():
        seeds = get_seeds()
        data = body()
        check_fields(data, {"seed"})
        s = seed_of(data, seeds)
        with store.locked(exclusive=True):
            snap = store.read(seeds)
            if s in snap.labels:
                raise ApiError(409, f"seed {s} is already labeled ({snap.labels[s]}); undo it first to change it")
            snap.skipped = [k for k in snap.skipped if k != s] + [s]
            store.write(snap)
        return jsonify(skipped=s, state=state(seeds, snap))

    return app


# ----------------------------------------------------------------------------- the page

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>hybrid_jax labeling</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #f4f4f4; color: #222; }
  header { display: flex; gap: 2rem; align-items: baseline; flex-wrap: wrap; }
  h1 { font-size: 1.2rem; margin: 0; }
  #pair { display: flex; gap: 2rem; margin: 1.5rem 0; }
  figure { margin: 0; text-align: center; }
  figure img { width: 384px; height: 384px; image-rendering: pixelated; background: #ccc;
               border: 3px solid #999; display: block; }
  figcaption { margin-top: .4rem; font-weight: bold; }
  #keys button { font-size: 1rem; margin-right: .5rem; padding: .4rem .8rem; }
  #status { min-height: 1.4rem; margin-top: 1rem; }
  #status.error { color: #b00020; font-weight: bold; }
  #done { font-size: 1.2rem; color: #0a6d2c; }
  .hidden { display: none !important; }
</style>
</head>
<body>
<div id="app" data-seed="" data-ready="0">
<header>
  <h1>Which image is better?</h1>
  <span>labeled <span id="progress"><span id="labeled">0</span> / <span id="total">0</span></span></span>
  <span>cheap_ok share <span id="share">&ndash;</span></span>
  <span>seed <span id="seed">&ndash;</span></span>
</header>
<div id="pair">
  <figure><img id="img-left" alt="left image"><figcaption>left (&larr; or 1)</figcaption></figure>
  <figure><img id="img-right" alt="right image"><figcaption>right (&rarr; or 3)</figcaption></figure>
</div>
<div id="keys">
  <button id="btn-left" data-answer="left">&larr; / 1 left clearly better</button>
  <button id="btn-same" data-answer="same">2 / space about the same</button>
  <button id="btn-right" data-answer="right">&rarr; / 3 right clearly better</button>
  <button id="btn-skip">s skip</button>
  <button id="btn-undo">u / backspace undo</button>
</div>
<div id="done" class="hidden"></div>
<div id="status" role="status"></div>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const app = $("app");
let current = null;   // {seed, left, ...} of the seed on screen
let busy = false;     // a request is in flight: further keys are ignored, never queued

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(method, url, payload) {
  const opts = {method, headers: {}};
  if (payload !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(payload);
  }
  const resp = await fetch(url, opts);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = {error: "bad response (" + resp.status + ")"}; }
  if (!resp.ok) throw new Error(data.error || ("HTTP " + resp.status));
  return data;
}

function loadImage(img, src) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve();
    img.onerror = () => reject(new Error("image " + src + " did not load"));
    img.src = src;
  });
}

async function show(state) {
  app.dataset.ready = "0";
  $("labeled").textContent = state.labeled;
  $("total").textContent = state.total;
  $("share").textContent = state.cheap_ok_share === null ? "\u2013"
      : (100 * state.cheap_ok_share).toFixed(1) + " %";
  current = state.next;
  if (!current) {
    app.dataset.seed = "";
    $("seed").textContent = "\u2013";
    $("pair").classList.add("hidden");
    $("done").classList.remove("hidden");
    $("done").textContent = "All " + state.total + " seeds are labeled. Undo (u) changes the last one.";
    app.dataset.ready = "1";
    return;
  }
  $("pair").classList.remove("hidden");
  $("done").classList.add("hidden");
  $("seed").textContent = current.seed + (current.skipped ? " (skipped before)" : "");
  app.dataset.seed = String(current.seed);
  const t = Date.now();
  await Promise.all(["left", "right"].map((side) =>
      loadImage($("img-" + side), "/img/" + current.seed + "/" + side + ".png?t=" + t)));
  app.dataset.ready = "1";
}

async function run(action, successText) {
  if (busy) return;
  busy = true;
  try {
    const data = await action();
    await show(data.state || data);
    if (successText) setStatus(successText(data), false);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    busy = false;
  }
}

function answer(a) {
  if (!current || app.dataset.ready !== "1") return;
  const seed = current.seed;
  run(() => api("POST", "/api/label", {seed: seed, answer: a, left: current.left}),
      (d) => "saved seed " + d.saved.seed + (d.saved.relabeled ? " (changed)" : ""));
}
function skip() {
  if (!current || app.dataset.ready !== "1") return;
  const seed = current.seed;
  run(() => api("POST", "/api/skip", {seed: seed}), (d) => "skipped seed " + d.skipped);
}
function undo() {
  run(() => api("POST", "/api/undo"), (d) => "undid seed " + d.undone.seed);
}
function refresh() {
  run(() => api("GET", "/api/state"), null);
}

const KEYS = {
  "ArrowLeft": () => answer("left"), "1": () => answer("left"),
  "ArrowRight": () => answer("right"), "3": () => answer("right"),
  "2": () => answer("same"), " ": () => answer("same"),
  "s": skip, "S": skip, "u": undo, "U": undo, "Backspace": undo,
};
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  const f = KEYS[e.key];
  if (!f) return;
  e.preventDefault();
  f();
});
for (const b of document.querySelectorAll("#keys button[data-answer]")) {
  b.addEventListener("click", () => answer(b.dataset.answer));
}
$("btn-skip").addEventListener("click", skip);
$("btn-undo").addEventListener("click", undo);
// buttons must not keep focus, or Space would "click" them a second time
for (const b of document.querySelectorAll("button")) b.addEventListener("mousedown", (e) => e.preventDefault());
refresh();
</script>
</body>
</html>
"""
