"""The labeling page: a person compares two images of each seed in a browser.

`create_app(workdir, seed=0, source=BINARY)` returns a Flask app that serves one page and a small
JSON API over a run's work dir. What is compared is a `Source` value:

- `BINARY` (the brief's study): Model A's and Model B's image of each seed.
  Input: `<workdir>/seeds/seeds.npz` with `seeds` [N], `options` (the brief pair's names, A's first) and
  each option's images [N, H, W, 3] in [-1, 1] under its name (`pairs.write_seeds`, the pipeline's seeds
  stage). Output: `<workdir>/labels/human.csv` with header `seed,label,answer,left` (read by the router stage
  through `hybrid_jax.quality.labels.read_labels`).
- `OPTIONS` (the allocation study): for each seed, the reference option (A at its full budget)
  beside every other option, one pair at a time. Input: the allocate stage's manifest
  `<workdir>/allocate/labeling.json` and the image files it names. Output:
  `<workdir>/labels/human_options.csv` with header `seed,option,label,answer,left`, one row per
  (seed, option): `cheap_ok` means the option's image is about as good as the reference's. The
  allocate stage takes these verdicts in place of the automated ones where they exist.

Each labels file has a small sidecar (`<name>.progress.json`) that remembers the order of the
answers (for undo) and the skipped items.

Each pair is shown in a random left/right order so that the person judges the images, not the
models; the order is a pure function of (seed, option, run seed), so a reload shows the same sides.
The answer ("left", "right" or "same") maps to the label: `A_needed` iff the side that shows the
reference (A) was chosen as clearly better, `cheap_ok` otherwise (about the same, or the candidate
better).
In a run of several classes the page names each seed's class (the seeds file's `labels`, the
classes of the run's `run.json`) and `/api/state` counts labels per class (`by_class`).

Every change is a read-modify-write of the CSV under an exclusive `fcntl.flock` on
`<workdir>/labels/.human.csv.lock` (so two tabs or two servers cannot lose each other's answers)
and an atomic file replacement (so a crash leaves the old file or the new one, never half).
Bad requests get a JSON error `{"error": ..., "status": ...}` with a 4xx status and change
nothing on disk. Only the page itself may use the API: a request naming another host, or sent
from another web page (`Origin`), gets 403, and a change without a JSON body gets 415 (see
`guard`).

Endpoints:
    GET  /                       the page (package data `page.html`, keyboard driven)
    GET  /api/state              progress and the next seed to label with its side order
    GET  /img/<seed>/<side>.png[?option=NAME]  side in {left, right}: the image shown on that side,
                                 upscaled (`option`: the candidate, needed with several)
    POST /api/label {seed[, option], answer[, left]}  answer in {left, right, same}
    POST /api/undo  {} or {seed[, option]} remove the most recent answer (or the given item's)
    POST /api/skip  {seed[, option]}  put the item after all other unlabeled items

Modules: `pairs` (what is compared, from which files), `service` (the page's logic and its labels
files, no Flask), `guard` (which requests are accepted, no Flask), `errors` (`ApiError`), `app` (the
Flask routes; needs the `label` extra). Importing this package does not need
Flask; `create_app` and `page_html` load it on first use and raise `FlaskMissing` (a
ModuleNotFoundError whose message says what to install) without it.
"""

from __future__ import annotations

from hybrid_jax.labeling.errors import ApiError
from hybrid_jax.labeling.pairs import (
    BINARY,
    MODELS,
    OPTIONS,
    OPTIONS_FILE,
    OPTIONS_MANIFEST,
    SEEDS_FILE,
    SOURCES,
    Seeds,
    Source,
    load_options,
    load_seeds,
    seed_images,
    write_seeds,
)
from hybrid_jax.labeling.service import (
    ANSWERS,
    COLUMNS,
    DISPLAY_SIZE,
    SIDES,
    LabelingService,
    LabelStore,
    Snapshot,
    answer_to_label,
    left_model,
    next_seed,
    progress,
    record_answer,
    remove_answer,
    side_model,
    skip_seed,
    to_png,
)

INSTALL_HINT = 'pip install -e ".[label]"'
_FLASK_NAMES = ("create_app", "page_html")

__all__ = [
    "ANSWERS", "BINARY", "COLUMNS", "DISPLAY_SIZE", "INSTALL_HINT", "MODELS", "OPTIONS", "OPTIONS_FILE",
    "OPTIONS_MANIFEST", "SEEDS_FILE", "SIDES", "SOURCES",
    "ApiError", "FlaskMissing", "LabelStore", "LabelingService", "Seeds", "Snapshot", "Source",
    "answer_to_label", "create_app", "left_model", "load_options", "load_seeds", "next_seed", "page_html",
    "progress", "record_answer", "remove_answer", "seed_images", "side_model", "skip_seed", "to_png", "write_seeds",
]


class FlaskMissing(ModuleNotFoundError):
    """Flask (the `label` extra) is not installed; the message says how to install it."""


def require_flask() -> None:
    """Raise FlaskMissing unless Flask and Werkzeug can be imported."""
    try:
        import flask  # noqa: F401
        import werkzeug.serving  # noqa: F401
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in ("flask", "werkzeug"):
            raise
        raise FlaskMissing(f"the labeling page needs Flask, which is not installed ({e}). Install the "
                           f"'label' extra: {INSTALL_HINT}", name=e.name) from None


def __getattr__(name: str):
    if name in _FLASK_NAMES:
        require_flask()
        from hybrid_jax.labeling import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
