"""Per-seed quality labels: read, validate, write and compare the labels CSV.

The router learns from one label per seed, "A_needed" (B's image is not good enough) or
"cheap_ok" (B's image may be kept). Labels come from people (the labeling page) or from the
automated labeler, always through a CSV with header `seed,label` and optional trailing
columns (the labeling page adds e.g. `answer,left`). A broken CSV is refused with a message
that names the file, the line and what to do; it is never half-read. Writes are atomic.
"""

from __future__ import annotations

import csv
import io as _stdio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hybrid_jax import io

LABELS = ("A_needed", "cheap_ok")
POSITIVE = "cheap_ok"  # class 1 for the router: B's cheap image is acceptable
HEADER = ("seed", "label")


class LabelError(ValueError):
    """A labels file or mapping is invalid; the message says where and what to do."""


def _fail(path, row: int | None, problem: str, todo: str) -> LabelError:
    where = f"{path}" + (f", line {row}" if row is not None else "")
    return LabelError(f"{where}: {problem}. {todo}")


def parse_seed(value: int | str) -> int:
    """A seed from a CSV field, a JSON value or a URL part: an integer (not a bool) or a string of
    decimal digits with an optional sign and surrounding spaces. Raises ValueError otherwise."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    text = value.strip() if isinstance(value, str) else ""
    if not text or not text.lstrip("+-").isdigit():
        raise ValueError(f"not an integer seed: {value!r}")
    return int(text)


def read_labels(path: str | os.PathLike, known_seeds: Sequence[int] | None = None) -> dict[int, str]:
    """Read a labels CSV into {seed: label} (extra columns ignored; see `read_labels_table`)."""
    return read_labels_table(path, known_seeds)[0]


def read_labels_table(path: str | os.PathLike, known_seeds: Sequence[int] | None = None
                      ) -> tuple[dict[int, str], dict[int, dict[str, str]]]:
    """Read a labels CSV into ({seed: label}, {seed: {extra column: value}}).

    The header must start with `seed,label`; further header columns (and the matching row
    fields) are allowed and returned as the extras. With `known_seeds`, every seed must be one of them.
    Raises LabelError naming the file and 1-based line for: a missing or empty file, a wrong
    header, a wrong field count, a non-integer, unknown or duplicate seed, a bad label.
    """
    known = None if known_seeds is None else {(int(s),) for s in known_seeds}
    labels, extra = read_keyed_labels(path, SEED_KEY, known)
    return {k[0]: v for k, v in labels.items()}, {k[0]: v for k, v in extra.items()}


SEED_KEY = ("seed",)  # one label per seed: the binary study (is B's image acceptable?)
OPTION_KEY = ("seed", "option")  # one label per (seed, option): is the option's image as good as the reference's?


def read_keyed_labels(path: str | os.PathLike, key: Sequence[str] = SEED_KEY, known: set | None = None
                      ) -> tuple[dict[tuple, str], dict[tuple, dict[str, str]]]:
    """Read a labels CSV whose rows are keyed by the columns `key` (`SEED_KEY` or `OPTION_KEY`) into
    ({key tuple: label}, {key tuple: {extra column: value}}); keys are (seed,) or (seed, option name).

    The header must start with the key columns and `label`. With `known` (a set of key tuples), every
    row's key must be one of them. Errors as `read_labels_table`, naming the file and line.
    """
    path, key = Path(path), tuple(key)
    head = (*key, "label")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _fail(path, None, "file not found", "Label the seeds first (labeling page or "
                    "automated labeler) or pass the right path") from None
    if not text.strip():
        raise _fail(path, 1, "the file is empty", f"Expected a header '{','.join(head)}' and one row "
                    f"per {_what(key)}; re-export the labels")
    reader = csv.reader(_stdio.StringIO(text))
    header = [h.strip().lower() for h in next(reader)]
    if tuple(header[:len(head)]) != head:
        raise _fail(path, 1, f"header is {','.join(header)!r}, expected it to start with '{','.join(head)}'",
                    f"Fix the first line; extra columns may follow '{','.join(head)}'")
    labels: dict[tuple, str] = {}
    extra: dict[tuple, dict[str, str]] = {}
    first_line: dict[tuple, int] = {}
    for fields in reader:
        row = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue  # blank line
        if len(fields) != len(header):
            raise _fail(path, row, f"{len(fields)} fields, the header has {len(header)}",
                        "Each row needs one value per header column")
        try:
            k = (parse_seed(fields[0]), *(f.strip() for f in fields[1:len(key)]))
        except ValueError:
            raise _fail(path, row, f"seed {fields[0]!r} is not an integer", "Seeds are whole numbers") from None
        shown = _show(k)
        if known is not None and k not in known:
            raise _fail(path, row, f"{shown} is not one of the {len(known)} {_what(key)}s of this run",
                        "Remove the row or label the seeds of this run")
        if k in labels:
            raise _fail(path, row, f"{shown} is labeled twice (first on line {first_line[k]})",
                        f"Keep one row per {_what(key)}")
        label = fields[len(key)].strip()
        if label not in LABELS:
            raise _fail(path, row, f"label {fields[len(key)]!r} is not one of {', '.join(LABELS)}",
                        "Correct the label")
        labels[k] = label
        first_line[k] = row
        if len(header) > len(head):
            extra[k] = dict(zip(header[len(head):], (f.strip() for f in fields[len(head):])))
    return labels, extra


def _what(key: tuple) -> str:
    return " and ".join(key) if len(key) > 1 else key[0]


def _show(k: tuple) -> str:
    return f"seed {k[0]}" + "".join(f", option {v!r}" for v in k[1:])


def _check_mapping(labels: Mapping, what: str = "labels", key_len: int = 1) -> None:
    """Keys are seeds (key_len 1, as ints) or (seed, option name) tuples; labels are LABELS."""
    for k, label in labels.items():
        seed, rest = (k, ()) if key_len == 1 else (k[0], k[1:])
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise LabelError(f"{what}: seed {seed!r} is not an integer. Seeds are whole numbers.")
        if len(rest) != key_len - 1 or not all(isinstance(v, str) and v.strip() for v in rest):
            raise LabelError(f"{what}: key {k!r} must be (seed, option name).")
        if label not in LABELS:
            raise LabelError(f"{what}: {_show((seed, *rest))} has label {label!r}, expected one of "
                             f"{', '.join(LABELS)}.")


def write_labels(path: str | os.PathLike, labels: Mapping[int, str],
                 extra: Mapping[int, Mapping[str, str]] | None = None) -> None:
    """Write {seed: label} (plus optional per-seed extra columns) as a CSV, sorted by seed.

    Everything is validated before the file is touched; the write is atomic, so an existing
    file is either replaced completely or left as it was.
    """
    _check_mapping(labels)
    write_keyed_labels(path, {(s,): v for s, v in labels.items()}, {(s,): v for s, v in (extra or {}).items()})


def write_keyed_labels(path: str | os.PathLike, labels: Mapping[tuple, str],
                       extra: Mapping[tuple, Mapping[str, str]] | None = None, key: Sequence[str] = SEED_KEY) -> None:
    """Write {key tuple: label} (keys as `read_keyed_labels` returns them) plus optional extra columns,
    sorted by key; validated first, written atomically."""
    key = tuple(key)
    _check_mapping({k if len(key) > 1 else k[0]: v for k, v in labels.items()}, key_len=len(key))
    extra = extra or {}
    stray = sorted(set(extra) - set(labels))
    if stray:
        shown = [k if len(key) > 1 else k[0] for k in stray[:10]]
        raise LabelError(f"extra columns given for unlabeled {_what(key)}s {shown}. Label them or drop the extras.")
    columns: list[str] = []
    for fields in extra.values():
        columns += [c for c in fields if c not in columns]
    clash = [c for c in columns if c.strip().lower() in (*key, "label")]
    if clash:
        raise LabelError(f"extra column names {clash} clash with '{','.join((*key, 'label'))}'. Rename them.")
    buf = _stdio.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*key, "label", *columns])
    for k in sorted(labels):
        row_extra = extra.get(k, {})
        writer.writerow([int(k[0]), *k[1:], labels[k], *(str(row_extra.get(c, "")) for c in columns)])
    io.write_text(path, buf.getvalue())


def to_targets(labels: Mapping[int, str], seeds: Sequence[int]) -> np.ndarray:
    """Router targets in the order of `seeds`: 1 for cheap_ok, 0 for A_needed (int64)."""
    _check_mapping(labels)
    missing = [int(s) for s in seeds if int(s) not in labels]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise LabelError(f"{len(missing)} of {len(seeds)} seeds have no label: {shown}. "
                         "Label them (labeling page or automated labeler) before training the router.")
    return np.array([labels[int(s)] == POSITIVE for s in seeds], dtype=np.int64)


def agreement(a: Mapping[int, str], b: Mapping[int, str]) -> dict:
    """Agreement of two labelings on their common seeds.

    Returns n (common seeds), accuracy (fraction with equal labels), cohen_kappa (chance-
    corrected agreement, as sklearn.metrics.cohen_kappa_score; NaN when undefined, i.e. no
    common seeds or both raters use a single identical label), and the counts of seeds found
    only in `a` or only in `b`.
    """
    _check_mapping(a, "first labeling")
    _check_mapping(b, "second labeling")
    common = sorted(set(a) & set(b))
    ya = np.array([a[s] == POSITIVE for s in common], dtype=float)
    yb = np.array([b[s] == POSITIVE for s in common], dtype=float)
    n = len(common)
    accuracy = float(np.mean(ya == yb)) if n else float("nan")
    if n:
        chance = float(ya.mean() * yb.mean() + (1 - ya.mean()) * (1 - yb.mean()))
        kappa = (accuracy - chance) / (1 - chance) if chance < 1 else float("nan")
    else:
        kappa = float("nan")
    return {"n": n, "accuracy": accuracy, "cohen_kappa": float(kappa),
            "only_in_first": len(set(a) - set(b)), "only_in_second": len(set(b) - set(a))}
