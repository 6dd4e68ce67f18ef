"""The labeling page over the allocation study's options: the reference option beside each other option, one
(seed, option) pair at a time, labels in a CSV keyed by (seed, option); the allocate stage's manifest format."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("flask", reason="the labeling page needs flask (pip install -e '.[label]')")

from hybrid_jax import io as hio  # noqa: E402
from hybrid_jax import labeling as lab  # noqa: E402
from hybrid_jax.quality import labels as labels_lib  # noqa: E402

SEEDS = [7, 3, 12, 0, 5]
OPTIONS = ("A/8 steps", "A/4 steps", "B/corrector 2", "B/corrector 0")  # the reference first
LEVELS = {name: 0.8 - 0.4 * i for i, name in enumerate(OPTIONS)}  # each option's images at one grey level


def make_workdir(root, seeds=SEEDS):
    """A fake run dir as the allocate stage leaves it: the seeds file holds A's and B's images, one file per
    other option, and the manifest naming them (reference first)."""
    n = len(seeds)
    image = lambda name: np.full((n, 4, 4, 3), LEVELS[name], np.float32)
    (root / "seeds").mkdir(parents=True)
    lab.write_seeds(root / "seeds" / "seeds.npz", np.asarray(seeds), {o: image(o) for o in OPTIONS[0:3:2]},
                    np.zeros(n, int))
    entries = [{"name": OPTIONS[0], "file": "seeds/seeds.npz", "array": OPTIONS[0]}]
    for name in OPTIONS[1:]:
        if name == OPTIONS[2]:
            entries.append({"name": name, "file": "seeds/seeds.npz", "array": name})
            continue
        rel = f"allocate/options/fp/{name.replace('/', '_').replace(' ', '_')}.npz"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        np.savez(root / rel, seeds=np.asarray(seeds), images=image(name))
        entries.append({"name": name, "file": rel, "array": "images"})
    hio.write_json(root / lab.OPTIONS_MANIFEST, {"seeds_file": "seeds/seeds.npz", "options": entries})
    return root


@pytest.fixture
def workdir(tmp_path):
    return make_workdir(tmp_path / "run")


@pytest.fixture
def client(workdir):
    return lab.create_app(workdir, seed=0, source=lab.OPTIONS).test_client()


def ok(r):
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def reference_side(item):
    return "left" if item["left"] == OPTIONS[0] else "right"


def test_every_seed_and_option_is_one_pair_in_seed_order(client):
    st = ok(client.get("/api/state"))
    assert st["total"] == len(SEEDS) * (len(OPTIONS) - 1) and st["reference"] == OPTIONS[0]
    assert list(st["by_option"]) == list(OPTIONS[1:])
    seen = []
    for _ in range(st["total"]):
        nxt = ok(client.get("/api/state"))["next"]
        assert {nxt["left"], nxt["right"]} == {OPTIONS[0], nxt["option"]}
        seen.append((nxt["seed"], nxt["option"]))
        ok(client.post("/api/label", json={"seed": nxt["seed"], "option": nxt["option"], "answer": "same"}))
    assert seen == [(s, o) for s in SEEDS for o in OPTIONS[1:]]
    assert ok(client.get("/api/state"))["done"]


def test_each_side_shows_its_option_s_image(client, workdir):
    for seed in SEEDS[:2]:
        for option in OPTIONS[1:]:
            left = lab.left_model(seed, 0, (OPTIONS[0], option))
            for side in lab.SIDES:
                shown = lab.side_model(side, left, (OPTIONS[0], option))
                png = client.get(f"/img/{seed}/{side}.png", query_string={"option": option})
                assert png.status_code == 200
                assert png.data == lab.to_png(np.full((4, 4, 3), LEVELS[shown], np.float32))


def test_the_side_order_is_random_per_pair(client):
    lefts = [lab.left_model(s, 0, (OPTIONS[0], o)) for s in range(60) for o in OPTIONS[1:]]
    assert 0.3 < np.mean([v == OPTIONS[0] for v in lefts]) < 0.7


def test_answers_become_labels_keyed_by_seed_and_option(client, workdir):
    st = ok(client.get("/api/state"))["next"]
    ok(client.post("/api/label", json={"seed": st["seed"], "option": st["option"], "answer": reference_side(st)}))
    st2 = ok(client.get("/api/state"))["next"]
    saved = ok(client.post("/api/label", json={"seed": st2["seed"], "option": st2["option"], "answer": "same",
                                                "left": st2["left"]}))["saved"]
    assert saved["seed"] == st2["seed"] and saved["option"] == st2["option"] and saved["label"] == "cheap_ok"
    path = workdir / lab.OPTIONS_FILE
    assert path.read_text().splitlines()[0] == "seed,option,label,answer,left"
    labels, extra = labels_lib.read_keyed_labels(path, labels_lib.OPTION_KEY)
    assert labels == {(st["seed"], st["option"]): "A_needed", (st2["seed"], st2["option"]): "cheap_ok"}
    assert extra[(st["seed"], st["option"])]["left"] == st["left"]
    assert not (workdir / "labels" / "human.csv").exists()  # the router's labels are untouched
    by = ok(client.get("/api/state"))["by_option"]
    assert by[st["option"]]["labeled"] == 1 + (st2["option"] == st["option"])


def test_skip_and_undo_name_the_pair_and_survive_a_restart(client, workdir):
    first = ok(client.get("/api/state"))["next"]
    out = ok(client.post("/api/skip", json={"seed": first["seed"], "option": first["option"]}))
    assert out["skipped"] == first["seed"] and out["option"] == first["option"]
    assert out["state"]["skipped"] == [[first["seed"], first["option"]]]
    nxt = out["state"]["next"]
    assert (nxt["seed"], nxt["option"]) == (SEEDS[0], OPTIONS[2])
    ok(client.post("/api/label", json={"seed": nxt["seed"], "option": nxt["option"], "answer": "same"}))
    again = lab.create_app(workdir, seed=0, source=lab.OPTIONS).test_client()  # a restarted server
    undone = ok(again.post("/api/undo", json={}))["undone"]
    assert (undone["seed"], undone["option"]) == (nxt["seed"], nxt["option"])
    assert ok(again.get("/api/state"))["skipped"] == [[first["seed"], first["option"]]]
    ok(again.post("/api/label", json={"seed": nxt["seed"], "option": nxt["option"], "answer": "same"}))
    ok(again.post("/api/undo", json={"seed": nxt["seed"], "option": nxt["option"]}))
    assert labels_lib.read_keyed_labels(workdir / lab.OPTIONS_FILE, labels_lib.OPTION_KEY)[0] == {}


@pytest.mark.parametrize("payload, status, message", [
    ({"seed": 7, "answer": "same"}, 400, "missing field 'option'"),
    ({"seed": 7, "option": "A/3 steps", "answer": "same"}, 404, "is not one compared with"),
    ({"seed": 7, "option": OPTIONS[0], "answer": "same"}, 404, "is not one compared with"),
    ({"seed": 99, "option": OPTIONS[1], "answer": "same"}, 404, "seed 99 is not one of"),
])
def test_a_pair_that_is_not_on_the_page_is_refused(client, workdir, payload, status, message):
    r = client.post("/api/label", json=payload)
    assert r.status_code == status and message in r.get_json()["error"]
    assert not (workdir / lab.OPTIONS_FILE).exists()


def test_a_manifest_over_other_seeds_or_missing_is_refused(tmp_path):
    svc = lab.LabelingService(tmp_path / "none", source=lab.OPTIONS)
    with pytest.raises(lab.ApiError, match="allocate stage first") as e:
        svc.state()
    assert e.value.status == 404
    workdir = make_workdir(tmp_path / "run")
    np.savez(workdir / "allocate/options/fp/A_4_steps.npz", seeds=np.asarray(SEEDS[::-1]),
             images=np.zeros((len(SEEDS), 4, 4, 3), np.float32))
    with pytest.raises(lab.ApiError, match="holds other seeds") as e:
        lab.LabelingService(workdir, source=lab.OPTIONS).state()
    assert e.value.status == 422


def test_a_hand_edited_row_of_an_unknown_option_blocks_changes(client, workdir):
    path = workdir / lab.OPTIONS_FILE
    path.parent.mkdir(parents=True)
    path.write_text(f"seed,option,label\n{SEEDS[0]},A/3 steps,cheap_ok\n")
    r = client.post("/api/label", json={"seed": SEEDS[0], "option": OPTIONS[1], "answer": "same"})
    assert r.status_code == 409 and "option 'A/3 steps' is not one of" in r.get_json()["error"]


def test_cli_serves_the_options_page_or_says_what_is_missing(tmp_path, capsys):
    from experiments import label as cli

    assert cli.main(["--workdir", str(tmp_path / "nothing"), "--port", "0", "--compare", "options"]) == 2
    assert "allocate stage" in capsys.readouterr().err
    sidecar = make_workdir(tmp_path / "run") / "labels" / "human_options.progress.json"
    sidecar.parent.mkdir()
    sidecar.write_text(json.dumps({"history": [], "skipped": [[SEEDS[1], OPTIONS[3]]]}))
    svc = lab.LabelingService(tmp_path / "run", source=lab.OPTIONS)
    assert svc.state()["skipped"] == [[SEEDS[1], OPTIONS[3]]]
