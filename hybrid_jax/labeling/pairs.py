"""What a labeling page compares: per seed, the reference option's image beside each candidate option's.

`Seeds` holds the images; `load_seeds` reads the brief's A-vs-B pair from the seeds stage's file (`write_seeds`:
each option's images under its own name),
`load_options` the allocation study's options from the allocate stage's manifest. A `Source` value
names what a page compares and where its labels go (`BINARY`, `OPTIONS`). Every problem with the
files is an `ApiError` that says what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from hybrid_jax import io
from hybrid_jax.labeling.errors import ApiError
from hybrid_jax.quality.labels import OPTION_KEY, SEED_KEY

MODELS = ("A", "B")  # the binary page's names for the brief's (reference, candidate): the seeds file's `options`
RERUN = "Re-run the pipeline's seeds stage."
SEEDS_FILE = Path("seeds") / "seeds.npz"  # the binary page's images, written by the seeds stage


@dataclass(frozen=True)
class Seeds:
    """The images a page compares: per seed, the reference option's image beside each candidate's."""

    seeds: np.ndarray  # int64 [N], in the order the page presents them
    images: dict  # option name -> [N, H, W, 3] in [-1, 1], the reference and every candidate
    index: dict  # seed -> row
    path: Path | None = None  # the file they were read from (for messages)
    classes: np.ndarray | None = None  # int [N] each seed's class (the seeds file's "labels"); None: one class
    class_names: tuple[str, ...] = ()  # the run's classes, indexed by `classes`
    reference: str = MODELS[0]
    candidates: tuple[str, ...] = MODELS[1:]  # compared with the reference, in the page's order per seed
    key_columns: tuple[str, ...] = SEED_KEY  # the labels CSV's key: SEED_KEY (one candidate) or OPTION_KEY

    def class_of(self, seed: int) -> str | None:
        """The seed's class name with several classes, else None."""
        if self.classes is None or len(self.class_names) < 2:
            return None
        return self.class_names[int(self.classes[self.index[seed]])]

    def image(self, seed: int, option: str) -> np.ndarray:
        return self.images[option][self.index[seed]]

    def key(self, seed: int, option: str | None = None):
        """The item key of (seed, candidate): the seed alone when the CSV is keyed by seed."""
        return seed if self.key_columns == SEED_KEY else (seed, option)

    def split(self, key) -> tuple[int, str]:
        """(seed, candidate option) of an item key."""
        return key if isinstance(key, tuple) else (key, self.candidates[0])

    def items(self) -> list:
        """Every item's key in the page's order: seed by seed, each seed's candidates in turn."""
        return [self.key(s, c) for s in self.seeds.tolist() for c in self.candidates]

    def check(self, seed: int) -> int:
        """`seed` if it is one of these seeds, else ApiError(404)."""
        if seed not in self.index:
            raise ApiError(404, f"seed {seed} is not one of the {len(self.seeds)} seeds of this run "
                                f"({self.path})")
        return seed

    def option(self, name: str | None) -> str:
        """The candidate `name` (None: the only candidate), else ApiError(400/404)."""
        if name is None:
            if len(self.candidates) > 1:
                raise ApiError(400, f"missing field 'option': one of {', '.join(self.candidates)}")
            return self.candidates[0]
        if name not in self.candidates:
            raise ApiError(404, f"option {name!r} is not one compared with {self.reference!r} "
                                f"({', '.join(self.candidates)})")
        return name


def write_seeds(path: str | os.PathLike, seeds: np.ndarray, images: dict[str, np.ndarray],
                labels: np.ndarray | None = None) -> Path:
    """The seeds stage's file: `seeds` [N], each seed's class `labels` [N] (if given), `options` (the options' names,
    the brief's reference first) and each option's images [N, H, W, 3] under its name."""
    extra = {} if labels is None else {"labels": labels}
    return io.write_npz(path, seeds=seeds, options=np.asarray(list(images)), **extra, **images)


def seed_images(arrays: dict) -> dict[str, np.ndarray]:
    """Option name -> its images, in the seeds file's order (`write_seeds`; the brief's reference first)."""
    return {str(name): arrays[str(name)] for name in arrays["options"]}


def load_seeds(path: str | os.PathLike, class_names: tuple[str, ...] = ()) -> Seeds:
    """The binary page's images, A's beside B's (the seeds file's two options, `MODELS` their names on the page):
    read and check a seeds npz; raises ApiError(404/422) saying what is wrong and what to do. `class_names`: the
    run's classes, which the file's per-seed "labels" index (several: shown per seed)."""
    path = Path(path)
    arrays = _read_seeds_file(path)
    options = [str(o) for o in arrays.get("options", ())]
    if len(options) != len(MODELS):
        raise ApiError(422, f"{path} names {len(options)} options in 'options', not the brief's two. {RERUN}")
    return _checked(path, arrays, {m: (o, arrays) for m, o in zip(MODELS, options)}, class_names)


def load_options(workdir: str | os.PathLike, class_names: tuple[str, ...] = ()) -> Seeds:
    """The allocation study's images, the reference option's beside every other option's: read the allocate
    stage's manifest (`allocate/labeling.json`) and the image files it names."""
    workdir = Path(workdir)
    manifest_path = workdir / OPTIONS_MANIFEST
    if not manifest_path.is_file():
        raise ApiError(404, f"{manifest_path} not found: no allocation options in this work dir. Run the "
                            "pipeline's allocate stage first (python -m experiments.run) or pass the right --workdir.")
    try:
        manifest = io.read_json(manifest_path)
        names = [o["name"] for o in manifest["options"]]
        files = {f: _read_seeds_file(workdir / f)
                 for f in dict.fromkeys([manifest["seeds_file"], *(o["file"] for o in manifest["options"])])}
        arrays = files[manifest["seeds_file"]]
        named = {o["name"]: (o["array"], files[o["file"]]) for o in manifest["options"]}
    except (KeyError, TypeError, ValueError) as e:
        raise ApiError(422, f"{manifest_path} is not a readable options manifest ({type(e).__name__}: {e}). "
                            "Re-run the pipeline's allocate stage.") from None
    for o in manifest["options"]:
        seeds = files[o["file"]].get("seeds")
        if seeds is not None and not np.array_equal(seeds, arrays["seeds"]):
            raise ApiError(422, f"{workdir / o['file']} holds other seeds than {workdir / manifest['seeds_file']}. "
                                "Re-run the pipeline's allocate stage.")
    seeds = _checked(workdir / manifest["seeds_file"], arrays, named, class_names)
    return replace(seeds, reference=names[0], candidates=tuple(names[1:]), key_columns=OPTION_KEY)


OPTIONS_MANIFEST = Path("allocate") / "labeling.json"  # written by the allocate stage
OPTIONS_FILE = Path("labels") / "human_options.csv"  # the options page's labels, read by the allocate stage


def _read_seeds_file(path: Path) -> dict:
    if not path.is_file():
        raise ApiError(404, f"{path} not found: no generated seeds in this work dir. Run the "
                            "pipeline's seeds stage first (python -m experiments.run) or pass the "
                            "right --workdir.")
    try:
        return io.read_npz(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ApiError(422, f"{path} cannot be read ({type(e).__name__}: {e}). {RERUN}") from None


def _checked(path: Path, arrays: dict, named: dict, class_names: tuple[str, ...]) -> Seeds:
    """Seeds over `arrays` ("seeds", "labels") with each option's images `named[option]` = (array name, its file's
    arrays), every problem an ApiError(422)."""
    missing = [k for k, z in [("seeds", arrays), *named.values()] if k not in z]
    if missing:
        raise ApiError(422, f"{path} has no array(s) {', '.join(missing)} (it has "
                            f"{', '.join(sorted(arrays)) or 'none'}). {RERUN}")
    seeds = arrays["seeds"]
    images = {name: z[k] for name, (k, z) in named.items()}
    problems = _seeds_problems(seeds, {k: z[k] for k, z in named.values()})
    if problems:
        raise ApiError(422, f"{path}: {'; '.join(problems)}. {RERUN}")
    classes = arrays.get("labels") if class_names else None
    if classes is not None and (classes.shape != seeds.shape or np.any(classes >= len(class_names))):
        raise ApiError(422, f"{path}: its classes ('labels') do not match the run's {len(class_names)} class(es) "
                            f"({', '.join(class_names)}). {RERUN}")
    seeds = seeds.astype(np.int64)
    return Seeds(seeds, images, {int(s): i for i, s in enumerate(seeds)}, path, classes, tuple(class_names))


def run_class_names(workdir: str | os.PathLike) -> tuple[str, ...]:
    """The classes of the run in `workdir` (its run.json), () when it has none."""
    from hybrid_jax.config import DataConfig

    path = Path(workdir) / "run.json"
    if not path.is_file():
        return ()
    return DataConfig(class_name=io.read_json(path)["config"]["data"]["class_name"]).classes


def _seeds_problems(seeds: np.ndarray, images: dict) -> list[str]:
    problems = []
    if seeds.ndim != 1 or seeds.dtype.kind not in "iu":
        problems.append(f"'seeds' must be a 1-D integer array, got {seeds.dtype} {seeds.shape}")
    for name, arr in images.items():
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype.kind != "f":
            problems.append(f"'{name}' must be float [N, H, W, 3], got {arr.dtype} {arr.shape}")
        elif seeds.ndim == 1 and arr.shape[0] != seeds.shape[0]:
            problems.append(f"'{name}' has {arr.shape[0]} images for {seeds.shape[0]} seeds")
    shapes = {k: a.shape for k, a in images.items()}
    if not problems and len(set(shapes.values())) > 1:
        problems.append(" and ".join(f"'{k}' {v}" for k, v in shapes.items()) + " differ in shape")
    if not problems and len(np.unique(seeds)) != len(seeds):
        problems.append("'seeds' has duplicates")
    return problems


@dataclass(frozen=True)
class Source:
    """What a page compares and where its labels go: `load(workdir, class names) -> Seeds`, re-read when the
    file `watch` (relative to the work dir) changes; labels in `labels/<name>.csv`, keyed by `key`."""

    name: str
    key: tuple[str, ...]
    load: Callable[[Path, tuple], Seeds]
    watch: Path


BINARY = Source("human", SEED_KEY, lambda workdir, names: load_seeds(workdir / SEEDS_FILE, names), SEEDS_FILE)
OPTIONS = Source(OPTIONS_FILE.stem, OPTION_KEY, load_options, OPTIONS_MANIFEST)
SOURCES = {"binary": BINARY, "options": OPTIONS}  # the page's --compare values
