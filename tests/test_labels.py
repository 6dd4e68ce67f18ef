"""Labels CSV: validation names the line, round trip, atomic writes, agreement vs sklearn."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from hybrid_jax.quality import labels as L


def _write(tmp_path, text: str):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_reads_valid_file_with_extra_columns(tmp_path):
    path = _write(tmp_path, "seed,label,answer,left\n3,cheap_ok,B,A\n1,A_needed,A,B\n\n")
    assert L.read_labels(path, known_seeds=range(5)) == {3: "cheap_ok", 1: "A_needed"}
    assert L.read_labels_table(path)[1] == {3: {"answer": "B", "left": "A"}, 1: {"answer": "A", "left": "B"}}


def test_header_only_gives_no_labels(tmp_path):
    assert L.read_labels(_write(tmp_path, "seed,label\n")) == {}


@pytest.mark.parametrize("text, line, words", [
    ("", 1, "empty"),
    ("seed;label\n1;cheap_ok\n", 1, "header"),
    ("label,seed\ncheap_ok,1\n", 1, "header"),
    ("seed,label\n1,cheap_ok\nx,cheap_ok\n", 3, "not an integer"),
    ("seed,label\n1.5,cheap_ok\n", 2, "not an integer"),
    ("seed,label\n1,cheap_ok\n99,A_needed\n", 3, "99 is not one of"),
    ("seed,label\n1,cheap_ok\n2,A_needed\n1,A_needed\n", 4, "labeled twice (first on line 2)"),
    ("seed,label\n1,ok\n", 2, "'ok' is not one of"),
    ("seed,label\n1,cheap_ok,extra\n", 2, "3 fields"),
])
def test_errors_name_file_line_and_problem(tmp_path, text, line, words):
    path = _write(tmp_path, text)
    with pytest.raises(L.LabelError) as e:
        L.read_labels(path, known_seeds=range(10))
    msg = str(e.value)
    assert str(path) in msg and f"line {line}" in msg and words in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(L.LabelError, match="file not found"):
        L.read_labels(tmp_path / "nope.csv")


def test_round_trip_sorted_with_extras(tmp_path):
    labels = {5: "cheap_ok", 2: "A_needed", 9: "A_needed"}
    extra = {5: {"answer": "B", "left": "A"}, 2: {"answer": "A"}}
    path = tmp_path / "sub" / "labels.csv"
    L.write_labels(path, labels, extra)
    lines = path.read_text().splitlines()
    assert lines[0] == "seed,label,answer,left"
    assert [int(r.split(",")[0]) for r in lines[1:]] == [2, 5, 9]
    assert L.read_labels(path, known_seeds=[2, 5, 9]) == labels
    assert L.read_labels_table(path)[1] == {2: {"answer": "A", "left": ""}, 5: {"answer": "B", "left": "A"},
                                            9: {"answer": "", "left": ""}}


def test_write_validates_before_touching_file(tmp_path):
    path = tmp_path / "labels.csv"
    L.write_labels(path, {1: "cheap_ok"})
    before = path.read_bytes()
    for bad in ({1: "good"}, {"1": "cheap_ok"}):
        with pytest.raises(L.LabelError):
            L.write_labels(path, bad)
    with pytest.raises(L.LabelError, match="unlabeled seeds"):
        L.write_labels(path, {1: "cheap_ok"}, extra={2: {"answer": "A"}})
    assert path.read_bytes() == before


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_write_is_atomic(tmp_path, monkeypatch, target):
    path = tmp_path / "labels.csv"
    L.write_labels(path, {1: "cheap_ok", 2: "A_needed"})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, target, boom)
    with pytest.raises(OSError):
        L.write_labels(path, {1: "A_needed", 2: "A_needed", 3: "cheap_ok"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


def test_to_targets_order_and_missing():
    labels = {1: "cheap_ok", 2: "A_needed", 3: "cheap_ok"}
    np.testing.assert_array_equal(L.to_targets(labels, [3, 2, 1]), [1, 0, 1])
    with pytest.raises(L.LabelError, match="2 of 3 seeds have no label: 7, 8"):
        L.to_targets(labels, [1, 7, 8])


def test_agreement_matches_sklearn():
    rng = np.random.default_rng(0)
    seeds = range(200)
    a = {s: L.LABELS[int(rng.random() < 0.35)] for s in seeds}
    b = {s: (lab if rng.random() < 0.8 else L.LABELS[1 - L.LABELS.index(lab)]) for s, lab in a.items()}
    b.pop(0)
    b[500] = "cheap_ok"
    got = L.agreement(a, b)
    common = sorted(set(a) & set(b))
    ya, yb = [a[s] for s in common], [b[s] for s in common]
    assert got["n"] == 199 and got["only_in_first"] == 1 and got["only_in_second"] == 1
    assert got["accuracy"] == pytest.approx(np.mean(np.array(ya) == np.array(yb)))
    assert got["cohen_kappa"] == pytest.approx(cohen_kappa_score(ya, yb), abs=1e-12)


def test_agreement_degenerate():
    assert np.isnan(L.agreement({}, {1: "cheap_ok"})["cohen_kappa"])
    same = L.agreement({1: "cheap_ok", 2: "cheap_ok"}, {1: "cheap_ok", 2: "cheap_ok"})
    assert same["accuracy"] == 1.0 and np.isnan(same["cohen_kappa"])
