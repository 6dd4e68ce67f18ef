"""Labeling page server: endpoints, side randomisation -> label, resume, undo, skip, bad input, atomic CSV,
same-origin guard, the service without Flask, the CLI without Flask."""

from __future__ import annotations

import io as _stdio
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("flask", reason="the labeling page needs flask (pip install -e '.[label]')")

from hybrid_jax import io as hio  # noqa: E402
from hybrid_jax import labeling as lab  # noqa: E402
from hybrid_jax.labeling import guard  # noqa: E402
from hybrid_jax.quality.labels import parse_seed, read_labels  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SEEDS = [7, 3, 12, 0, 5, 9, 1, 4]  # not sorted: the page follows the file order


def make_workdir(root, seeds=SEEDS, size=32, **drop):
    """A fake run dir: seeds/seeds.npz (`labeling.write_seeds`'s layout: the options "A" and "B") with bright A images
    and dark B images (random texture)."""
    rng = np.random.default_rng(0)
    n = len(seeds)
    arrays = {
        "seeds": np.asarray(seeds, dtype=np.int64),
        "options": np.asarray(["A", "B"]),
        "A": rng.uniform(0.2, 1.0, (n, size, size, 3)).astype(np.float32),
        "B": rng.uniform(-1.0, -0.2, (n, size, size, 3)).astype(np.float32),
    }
    for k in drop:
        arrays.pop(k)
    (root / "seeds").mkdir(parents=True, exist_ok=True)
    np.savez(root / "seeds" / "seeds.npz", **arrays)
    return root


@pytest.fixture
def workdir(tmp_path):
    return make_workdir(tmp_path / "run")


@pytest.fixture
def client(workdir):
    return lab.create_app(workdir, seed=0).test_client()


def csv_path(workdir):
    return workdir / "labels" / "human.csv"


def disk(workdir):
    """Every file under labels/ with its bytes (to check that nothing changed)."""
    d = workdir / "labels"
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.is_dir() else {}


def post(client, url, payload=None):
    """A same-origin JSON POST, as the page sends it (undo without a seed sends {})."""
    return client.post(url, json={} if payload is None else payload)


def label(client, seed, answer):
    r = post(client, "/api/label", {"seed": seed, "answer": answer})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def state(client):
    r = client.get("/api/state")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


# ----------------------------------------------------------------------------- pure logic

def test_side_order_is_deterministic_and_random_looking():
    orders = [lab.left_model(s, 0) for s in range(200)]
    assert orders == [lab.left_model(s, 0) for s in range(200)]  # a reload shows the same sides
    assert set(orders) == {"A", "B"} and 60 < orders.count("A") < 140
    assert orders != [lab.left_model(s, 1) for s in range(200)]  # the run seed changes it


@pytest.mark.parametrize("answer, left, expected", [
    ("left", "A", "A_needed"), ("right", "B", "A_needed"),
    ("left", "B", "cheap_ok"), ("right", "A", "cheap_ok"),
    ("same", "A", "cheap_ok"), ("same", "B", "cheap_ok"),
])
def test_answer_maps_to_label(answer, left, expected):
    assert lab.answer_to_label(answer, left) == expected


def test_png_is_nearest_neighbour_upscaled():
    img = np.random.default_rng(1).uniform(-1, 1, (32, 32, 3)).astype(np.float32)
    out = np.asarray(Image.open(_stdio.BytesIO(lab.to_png(img, 256))))
    assert out.shape == (256, 256, 3)
    src = np.round((img + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(out, np.repeat(np.repeat(src, 8, 0), 8, 1))


# ----------------------------------------------------------------------------- endpoints

def test_page_has_stable_ids(client):
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    for id_ in ("app", "img-left", "img-right", "progress", "labeled", "total", "share", "seed",
                "btn-left", "btn-same", "btn-right", "btn-skip", "btn-undo", "status", "done"):
        assert f'id="{id_}"' in html


def test_initial_state(client, workdir):
    s = state(client)
    assert s["total"] == len(SEEDS) and s["labeled"] == 0 and s["cheap_ok_share"] is None
    assert s["next"]["seed"] == SEEDS[0] and s["next"]["left"] == lab.left_model(SEEDS[0], 0)
    assert {s["next"]["left"], s["next"]["right"]} == {"A", "B"}
    assert not s["can_undo"] and not s["done"]
    assert disk(workdir) == {}  # looking changes nothing


def test_each_seed_shows_its_class_and_progress_is_counted_per_class(tmp_path):
    """With several classes (the run's run.json and the seeds file's per-seed classes) the page names the
    seed's class and counts each class's labels; one class shows neither."""
    import json

    workdir = make_workdir(tmp_path / "run")
    z = dict(np.load(workdir / "seeds" / "seeds.npz"))
    np.savez(workdir / "seeds" / "seeds.npz", **z, labels=np.asarray(SEEDS) % 2)
    (workdir / "run.json").write_text(json.dumps({"config": {"data": {"class_name": "cat,dog"}}}))
    client = lab.create_app(workdir, seed=0).test_client()
    s = state(client)
    assert s["next"]["class"] == ("cat", "dog")[SEEDS[0] % 2]
    assert s["by_class"] == {"dog": {"total": 5, "labeled": 0, "cheap_ok": 0},
                             "cat": {"total": 3, "labeled": 0, "cheap_ok": 0}}
    b_side = "left" if s["next"]["left"] == "B" else "right"
    label(client, SEEDS[0], b_side)  # B clearly better: cheap_ok
    assert state(client)["by_class"]["dog"] == {"total": 5, "labeled": 1, "cheap_ok": 1}
    html = client.get("/").get_data(as_text=True)
    assert 'id="class"' in html and 'id="by-class"' in html
    (workdir / "run.json").write_text(json.dumps({"config": {"data": {"class_name": "dog"}}}))
    np.savez(workdir / "seeds" / "seeds.npz", **z, labels=np.zeros(len(SEEDS), int))
    one = state(lab.create_app(workdir, seed=0).test_client())
    assert one["by_class"] == {} and one["next"]["class"] is None
    np.savez(workdir / "seeds" / "seeds.npz", **z, labels=np.full(len(SEEDS), 2))  # a class the run lacks
    r = lab.create_app(workdir, seed=0).test_client().get("/api/state")
    assert r.status_code == 422 and "do not match the run's 1 class(es)" in r.get_json()["error"]


@pytest.mark.parametrize("side", ["left", "right"])
def test_images_show_the_model_of_each_side(client, workdir, side):
    z = np.load(workdir / "seeds" / "seeds.npz")
    for i, seed in enumerate(SEEDS):
        r = client.get(f"/img/{seed}/{side}.png")
        assert r.status_code == 200 and r.mimetype == "image/png"
        model = lab.side_model(side, lab.left_model(seed, 0))
        expected = z[model][i]
        assert r.data == lab.to_png(expected)
        # independent of the helpers: A's fake images are bright, B's dark
        bright = np.asarray(Image.open(_stdio.BytesIO(r.data))).mean() > 127
        assert bright == (model == "A")


def test_both_orders_map_to_the_right_label(client, workdir):
    """For seeds with A on the left and with A on the right: the side showing A chosen -> A_needed."""
    by_left = {o: [s for s in SEEDS if lab.left_model(s, 0) == o] for o in "AB"}
    assert by_left["A"] and by_left["B"], "the fixture needs both orders"
    expected = {}
    for left, seeds in by_left.items():
        for seed, answer in zip(seeds, ["left", "right", "same"]):
            # which side shows A, judged from the served pixels (A bright)
            a_side = "left" if np.asarray(Image.open(_stdio.BytesIO(
                client.get(f"/img/{seed}/left.png").data))).mean() > 127 else "right"
            assert a_side == ("left" if left == "A" else "right")
            out = label(client, seed, answer)
            expected[seed] = "A_needed" if answer == a_side else "cheap_ok"
            assert out["saved"] == {"seed": seed, "label": expected[seed], "answer": answer,
                                    "left": left, "relabeled": False}
    assert read_labels(csv_path(workdir), known_seeds=SEEDS) == expected
    lines = csv_path(workdir).read_text().splitlines()
    assert lines[0] == "seed,label,answer,left"
    for seed in expected:
        row = next(line for line in lines[1:] if line.split(",")[0] == str(seed))
        assert row.split(",")[3] == lab.left_model(seed, 0)


def test_progress_share_and_resume(workdir, client):
    label(client, SEEDS[0], "same")
    out = label(client, SEEDS[1], "left" if lab.left_model(SEEDS[1], 0) == "A" else "right")
    st = out["state"]
    assert st["labeled"] == 2 and st["cheap_ok"] == 1 and st["A_needed"] == 1
    assert st["cheap_ok_share"] == pytest.approx(0.5)
    assert st["next"]["seed"] == SEEDS[2]
    # a new server (reopening the page) resumes at the first unlabeled seed
    again = state(lab.create_app(workdir, seed=0).test_client())
    assert again["labeled"] == 2 and again["next"]["seed"] == SEEDS[2]
    # a gap: labeling a later seed does not move the first unlabeled one
    label(client, SEEDS[4], "same")
    assert state(client)["next"]["seed"] == SEEDS[2]


def test_relabel_replaces_the_answer(client, workdir):
    label(client, SEEDS[0], "same")
    out = label(client, SEEDS[0], "left")
    assert out["saved"]["relabeled"]
    assert len(read_labels(csv_path(workdir))) == 1
    assert f"{SEEDS[0]},{out['saved']['label']},left," in csv_path(workdir).read_text()


def test_undo_removes_the_most_recent_answers(client, workdir):
    for seed in SEEDS[:3]:
        label(client, seed, "same")
    label(client, SEEDS[0], "left")  # re-answering makes seed 0 the most recent
    r = post(client, "/api/undo")
    assert r.status_code == 200
    body = r.get_json()
    assert body["undone"]["seed"] == SEEDS[0] and body["undone"]["answer"] == "left"
    assert body["state"]["next"]["seed"] == SEEDS[0]
    assert body["state"]["labeled"] == 2
    assert post(client, "/api/undo").get_json()["undone"]["seed"] == SEEDS[2]
    assert set(read_labels(csv_path(workdir))) == {SEEDS[1]}
    # the order survives a restart (sidecar), and undo by seed works too
    other = lab.create_app(workdir, seed=0).test_client()
    r = post(other, "/api/undo", {"seed": SEEDS[1]})
    assert r.status_code == 200 and read_labels(csv_path(workdir)) == {}
    assert csv_path(workdir).read_text() == "seed,label,answer,left\n"
    before = disk(workdir)
    r = post(other, "/api/undo")
    assert r.status_code == 409 and "nothing to undo" in r.get_json()["error"]
    r = post(other, "/api/undo", {"seed": SEEDS[1]})
    assert r.status_code == 409 and "no label" in r.get_json()["error"]
    assert disk(workdir) == before


def test_skipped_seeds_come_after_the_unlabeled_ones(client, workdir):
    st = post(client, "/api/skip", {"seed": SEEDS[0]}).get_json()["state"]
    assert st["next"]["seed"] == SEEDS[1] and st["skipped"] == [SEEDS[0]]
    post(client, "/api/skip", {"seed": SEEDS[1]})
    assert state(lab.create_app(workdir).test_client())["next"]["seed"] == SEEDS[2]  # persisted
    for seed in SEEDS[2:]:
        label(client, seed, "same")
    st = state(client)
    assert st["next"]["seed"] == SEEDS[0] and st["next"]["skipped"]
    # skipping a skipped seed again cycles through the skipped ones
    assert post(client, "/api/skip", {"seed": SEEDS[0]}).get_json()["state"]["next"]["seed"] == SEEDS[1]
    label(client, SEEDS[1], "same")
    st = label(client, SEEDS[0], "same")["state"]
    assert st["done"] and st["next"] is None and st["skipped"] == [] and st["labeled"] == len(SEEDS)
    before = disk(workdir)
    r = post(client, "/api/skip", {"seed": SEEDS[0]})
    assert r.status_code == 409 and "already labeled" in r.get_json()["error"]
    assert disk(workdir) == before


def test_imported_csv_keeps_its_rows_and_gains_the_columns(workdir, client):
    (workdir / "labels").mkdir()
    csv_path(workdir).write_text(f"seed,label\n{SEEDS[0]},A_needed\n")
    assert state(client)["next"]["seed"] == SEEDS[1]
    label(client, SEEDS[1], "same")
    lines = csv_path(workdir).read_text().splitlines()
    assert lines[0] == "seed,label,answer,left"
    assert f"{SEEDS[0]},A_needed,," in lines
    r = post(client, "/api/undo")
    assert r.get_json()["undone"]["seed"] == SEEDS[1]
    r = post(client, "/api/undo")  # the imported row is not in this page's history
    assert r.status_code == 409 and "by seed" in r.get_json()["error"]
    assert read_labels(csv_path(workdir)) == {SEEDS[0]: "A_needed"}


# ----------------------------------------------------------------------------- bad input

BAD_REQUESTS = [
    ("post", "/api/label", {"data": "{not json", "content_type": "application/json"}, 400, "JSON object"),
    ("post", "/api/label", {"data": "", "content_type": "application/json"}, 400, "JSON object"),
    ("post", "/api/label", {"json": [1, "left"]}, 400, "JSON object"),
    ("post", "/api/label", {"json": {"answer": "left"}}, 400, "missing field 'seed'"),
    ("post", "/api/label", {"json": {"seed": "x", "answer": "left"}}, 400, "must be an integer"),
    ("post", "/api/label", {"json": {"seed": True, "answer": "left"}}, 400, "must be an integer"),
    ("post", "/api/label", {"json": {"seed": 1.5, "answer": "left"}}, 400, "must be an integer"),
    ("post", "/api/label", {"json": {"seed": 999, "answer": "left"}}, 404, "seed 999 is not one of the 8"),
    ("post", "/api/label", {"json": {"seed": 7, "answer": "A"}}, 400, "'answer' must be one of"),
    ("post", "/api/label", {"json": {"seed": 7}}, 400, "'answer' must be one of"),
    ("post", "/api/label", {"json": {"seed": 7, "answer": "left", "label": "cheap_ok"}}, 400, "unknown field"),
    ("post", "/api/label", {"json": {"seed": 7, "answer": "left", "left": "?"}}, 409, "Reload the page"),
    ("post", "/api/skip", {"json": {"seed": -4}}, 404, "seed -4 is not one of"),
    ("post", "/api/skip", {"data": "[]", "content_type": "application/json"}, 400, "JSON object"),
    ("post", "/api/undo", {"json": {"seed": 999}}, 404, "seed 999"),
    ("post", "/api/undo", {"data": "{", "content_type": "application/json"}, 400, "JSON object"),
    ("get", "/img/999/left.png", {}, 404, "seed 999"),
    ("get", "/img/abc/left.png", {}, 400, "not an integer"),
    ("get", "/img/7/top.png", {}, 404, "side 'top'"),
    ("get", "/api/label", {}, 405, "Method Not Allowed"),
    ("get", "/api/nothing", {}, 404, "Not Found"),
]


@pytest.mark.parametrize("method, url, kw, status, words", BAD_REQUESTS)
def test_bad_requests_get_json_errors_and_change_nothing(client, workdir, method, url, kw, status, words):
    label(client, SEEDS[1], "same")  # an existing CSV and sidecar to protect
    post(client, "/api/skip", {"seed": SEEDS[2]})
    before = disk(workdir)
    assert set(before) >= {"human.csv", "human.progress.json"}
    r = getattr(client, method)(url, **kw)
    assert r.status_code == status
    body = r.get_json()
    assert body["status"] == status and words in body["error"]
    assert disk(workdir) == before  # byte-for-byte


def test_left_from_another_run_seed_is_refused(workdir):
    other_seed = next(s for s in range(1, 100)
                      if lab.left_model(SEEDS[0], s) != lab.left_model(SEEDS[0], 0))
    stale = lab.left_model(SEEDS[0], other_seed)
    r = lab.create_app(workdir, seed=0).test_client().post(
        "/api/label", json={"seed": SEEDS[0], "answer": "left", "left": stale})
    assert r.status_code == 409 and disk(workdir) == {}


@pytest.mark.parametrize("drop, status, words", [
    ("all", 404, "not found: no generated seeds"),
    ("B", 422, "no array(s) B"),
    ("options", 422, "names 0 options in 'options', not the brief's two"),
])
def test_missing_npz_or_images_gives_clear_errors(tmp_path, drop, status, words):
    workdir = tmp_path / "run"
    if drop == "all":
        workdir.mkdir()
    else:
        make_workdir(workdir, **{drop: True})
    client = lab.create_app(workdir).test_client()
    for r in (client.get("/api/state"), client.get(f"/img/{SEEDS[0]}/left.png"),
              client.post("/api/label", json={"seed": SEEDS[0], "answer": "left"}),
              client.post("/api/skip", json={"seed": SEEDS[0]}), client.post("/api/undo", json={})):
        assert r.status_code == status, r.get_json()
        assert words in r.get_json()["error"]
    assert disk(workdir) == {}
    with pytest.raises(lab.ApiError, match="seeds stage"):
        lab.load_seeds(workdir / "seeds" / "seeds.npz")


def test_broken_npz_shapes_are_named(tmp_path):
    workdir = make_workdir(tmp_path / "run")
    lab.write_seeds(workdir / "seeds" / "seeds.npz", np.arange(3), {"A": np.zeros((2, 32, 32, 3), np.float32),
                                                                      "B": np.zeros((3, 32, 32, 3), np.float32)})
    r = lab.create_app(workdir).test_client().get("/api/state")
    assert r.status_code == 422 and "'A' has 2 images for 3 seeds" in r.get_json()["error"]


def test_nan_image_is_refused(tmp_path):
    workdir = make_workdir(tmp_path / "run")
    z = dict(np.load(workdir / "seeds" / "seeds.npz"))
    z["A"][0, 0, 0, 0] = np.nan
    z["B"][0, 0, 0, 0] = np.nan
    np.savez(workdir / "seeds" / "seeds.npz", **z)
    r = lab.create_app(workdir).test_client().get(f"/img/{SEEDS[0]}/left.png")
    assert r.status_code == 422 and "NaN" in r.get_json()["error"]


def test_hand_broken_csv_is_not_overwritten(workdir, client):
    (workdir / "labels").mkdir()
    csv_path(workdir).write_text("seed,label,answer,left\n7,cheap_ok,same,A\n999,A_needed,left,A\n")
    before = disk(workdir)
    for r in (client.get("/api/state"), post(client, "/api/label", {"seed": 3, "answer": "same"}),
              post(client, "/api/undo"), post(client, "/api/skip", {"seed": 3})):
        assert r.status_code == 409 and "999 is not one of the 8" in r.get_json()["error"]
    assert {k: v for k, v in disk(workdir).items() if not k.startswith(".")} == \
        {k: v for k, v in before.items() if not k.startswith(".")}


# ----------------------------------------------------------------------------- atomic writes, locking

def test_crash_mid_write_leaves_the_old_csv(client, workdir, monkeypatch):
    label(client, SEEDS[0], "same")
    before = disk(workdir)

    def crash(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", crash)
    r = post(client, "/api/label", {"seed": SEEDS[1], "answer": "left"})
    assert r.status_code == 507 and "files written earlier are unchanged" in r.get_json()["error"]
    # the store's writer directly
    store = lab.LabelStore(workdir)
    snap = store.read(lab.load_seeds(workdir / "seeds" / "seeds.npz"))
    snap.labels[SEEDS[2]] = "A_needed"
    with pytest.raises(OSError):
        store.write(snap)
    monkeypatch.undo()
    assert disk(workdir) == before  # old file intact, no temp files left behind
    assert read_labels(csv_path(workdir)) == {SEEDS[0]: "cheap_ok"}


def test_concurrent_tabs_lose_no_answer(tmp_path):
    """Two servers (or tabs) labeling at once: the lock serialises read-modify-write."""
    seeds = list(range(40))
    workdir = make_workdir(tmp_path / "run", seeds=seeds, size=4)
    apps = [lab.create_app(workdir), lab.create_app(workdir)]
    start = threading.Barrier(2)

    def work(i):
        c = apps[i].test_client()
        start.wait()
        for seed in seeds[i::2]:
            assert c.post("/api/label", json={"seed": seed, "answer": "same"}).status_code == 200

    with ThreadPoolExecutor(2) as ex:
        list(ex.map(work, [0, 1]))
    assert read_labels(workdir / "labels" / "human.csv", known_seeds=seeds) == {s: "cheap_ok" for s in seeds}
    progress = json.loads((workdir / "labels" / "human.progress.json").read_text())
    assert sorted(progress["history"]) == seeds


def test_cli_refuses_a_workdir_without_seeds(tmp_path, capsys):
    from experiments import label as cli

    assert cli.main(["--workdir", str(tmp_path / "nothing"), "--port", "0"]) == 2
    assert "seeds stage" in capsys.readouterr().err


# ----------------------------------------------------------------------------- same-origin guard

EVIL = "http://evil.example"
ATTACK = json.dumps({"seed": SEEDS[0], "answer": "left"})  # valid JSON text, as a foreign form would send it


def test_the_cross_site_request_is_refused_and_writes_nothing(client, workdir):
    """What any web page in the same browser can send without a preflight: text/plain + its own Origin."""
    r = client.post("/api/label", data=ATTACK, content_type="text/plain", headers={"Origin": EVIL})
    assert r.status_code == 403 and r.get_json()["status"] == 403
    assert "http://evil.example" in r.get_json()["error"] and "not from this labeling page" in r.get_json()["error"]
    assert disk(workdir) == {}


@pytest.mark.parametrize("url", ["/api/label", "/api/skip", "/api/undo"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_non_json_posts_get_415_and_write_nothing(client, workdir, url, content_type):
    label(client, SEEDS[1], "same")
    before = disk(workdir)
    kw = {"data": ATTACK, "content_type": content_type} if content_type else {}
    r = client.post(url, **kw)
    assert r.status_code == 415, r.get_json()
    assert "Content-Type: application/json" in r.get_json()["error"]
    assert disk(workdir) == before


@pytest.mark.parametrize("method, url, kw", [
    ("post", "/api/label", {"json": {"seed": SEEDS[0], "answer": "left"}}),
    ("post", "/api/undo", {"json": {}}),
    ("post", "/api/skip", {"json": {"seed": SEEDS[0]}}),
    ("get", "/api/state", {}),
    ("get", f"/img/{SEEDS[0]}/left.png", {}),
])
@pytest.mark.parametrize("headers, words", [
    ({"Origin": EVIL}, "comes from the web page"),
    ({"Origin": "null"}, "comes from the web page"),
    ({"Origin": "http://localhost:8080"}, "comes from the web page"),  # another port is another site
    ({"Origin": "https://localhost"}, "comes from the web page"),
    ({"Host": "evil.example"}, "names host 'evil.example'"),  # DNS rebinding: right IP, foreign name
    ({"Host": "evil.example", "Origin": EVIL}, "names host"),
    ({"Host": "localhost:81"}, "names host"),
    ({"Host": "localhost@evil.example"}, "names host"),
])
def test_foreign_origin_or_host_gets_403_and_writes_nothing(client, workdir, method, url, kw, headers, words):
    label(client, SEEDS[1], "same")
    before = disk(workdir)
    r = getattr(client, method)(url, headers=headers, **kw)
    assert r.status_code == 403 and r.mimetype == "application/json"
    body = r.get_json()
    assert body["status"] == 403 and words in body["error"] and "http://localhost:80" in body["error"]
    assert disk(workdir) == before


def test_same_origin_json_is_accepted_and_recorded(client, workdir):
    r = client.post("/api/label", json={"seed": SEEDS[0], "answer": "same"},
                    headers={"Origin": "http://localhost", "Host": "localhost"})
    assert r.status_code == 200 and r.get_json()["saved"]["label"] == "cheap_ok"
    assert read_labels(csv_path(workdir)) == {SEEDS[0]: "cheap_ok"}
    r = client.post("/api/undo", json={}, headers={"Origin": "http://localhost:80"})
    assert r.status_code == 200 and read_labels(csv_path(workdir)) == {}
    r = client.post("/api/undo", data="", content_type="application/json; charset=utf-8")
    assert r.status_code == 409  # JSON type with parameters is JSON; nothing left to undo


@pytest.mark.parametrize("host, origin", [
    ("127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("localhost:5000", "http://localhost:5000"),
    ("LOCALHOST:5000", None),
    ("[::1]:5000", "http://[::1]:5000"),
])
def test_loopback_spellings_of_the_served_address_are_accepted(workdir, host, origin):
    client = lab.create_app(workdir).test_client()
    headers = {"Host": host, **({"Origin": origin} if origin else {})}
    base = "http://127.0.0.1:5000"  # the test client's SERVER_NAME/SERVER_PORT: where it "listens"
    r = client.post("/api/label", base_url=base, json={"seed": SEEDS[0], "answer": "same"}, headers=headers)
    assert r.status_code == 200, r.get_json()
    assert client.get("/api/state", base_url=base, headers=headers).get_json()["labeled"] == 1


def test_allowed_hosts_admit_a_tunnel_or_a_name(workdir):
    client = lab.create_app(workdir, allowed_hosts=["localhost:8080", "labbox.lan"]).test_client()
    base = "http://127.0.0.1:5000"
    for host in ("localhost:8080", "labbox.lan:5000"):
        r = client.get("/api/state", base_url=base, headers={"Host": host, "Origin": f"http://{host}"})
        assert r.status_code == 200, r.get_json()
    for host in ("localhost:8081", "labbox.lan:8080", "other.lan:5000"):
        assert client.get("/api/state", base_url=base, headers={"Host": host}).status_code == 403
    with pytest.raises(ValueError, match="not 'name' or 'name:port'"):
        lab.create_app(workdir, allowed_hosts=["http://x/"])


@pytest.mark.parametrize("address, served, ok", [
    (("127.0.0.1", 5000), ("127.0.0.1", 5000), True),
    (("localhost", 5000), ("127.0.0.1", 5000), True),
    (("::1", 5000), ("127.0.0.1", 5000), True),
    (("127.0.0.1", 5000), ("::1", 5000), True),
    (("127.0.0.1", 5001), ("127.0.0.1", 5000), False),
    (("evil.example", 5000), ("127.0.0.1", 5000), False),
    (("localhost", 5000), ("192.168.1.5", 5000), False),  # not a loopback bind
    (("192.168.1.5", 5000), ("192.168.1.5", 5000), True),
    (("192.168.1.5", 5000), ("0.0.0.0", 5000), True),  # wildcard bind: IP literals cannot be rebound
    (("localhost", 5000), ("::", 5000), True),
    (("evil.example", 5000), ("0.0.0.0", 5000), False),
])
def test_address_allowed(address, served, ok):
    assert guard.address_allowed(address, served) is ok


def test_guard_against_a_real_server(workdir):
    """Raw HTTP to a listening server: the served host:port comes from the socket, not from the test client."""
    import http.client

    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, lab.create_app(workdir), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    port = srv.server_port

    def send(method, url, body=None, **headers):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(method, url, body=body, headers=headers)
        resp = conn.getresponse()
        out = resp.status, json.loads(resp.read() or b"null") if url.startswith("/api") else None
        conn.close()
        return out

    try:
        assert send("POST", "/api/label", ATTACK, **{"Content-Type": "text/plain", "Origin": EVIL})[0] == 403
        assert send("POST", "/api/label", ATTACK, **{"Content-Type": "text/plain"})[0] == 415
        assert send("GET", "/api/state", Host=f"evil.example:{port}")[0] == 403
        assert send("GET", "/api/state", Host="localhost:1")[0] == 403
        assert disk(workdir) == {}
        status, body = send("POST", "/api/label", ATTACK, **{"Content-Type": "application/json",
                            "Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"})
        assert status == 200 and body["saved"]["seed"] == SEEDS[0]
        assert send("GET", "/api/state")[1]["labeled"] == 1
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
    assert set(read_labels(csv_path(workdir))) == {SEEDS[0]}


def test_page_is_not_framed_and_undo_sends_json(client):
    r = client.get("/")
    assert r.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert 'api("POST", "/api/undo", {})' in r.get_data(as_text=True)  # a bare POST would get 415


# ----------------------------------------------------------------------------- structure

def test_service_works_without_flask(workdir):
    svc = lab.LabelingService(workdir, run_seed=0)
    assert svc.state()["next"]["seed"] == SEEDS[0]
    out = svc.label({"seed": SEEDS[0], "answer": "same"})
    assert out["saved"]["label"] == "cheap_ok" and out["state"]["next"]["seed"] == SEEDS[1]
    assert svc.skip({"seed": str(SEEDS[1])})["state"]["next"]["seed"] == SEEDS[2]
    assert svc.undo()["undone"]["seed"] == SEEDS[0]
    assert svc.image_png(SEEDS[0], "left") == lab.to_png(
        svc.seeds().image(SEEDS[0], lab.left_model(SEEDS[0], 0)))
    with pytest.raises(lab.ApiError) as e:
        svc.label({"seed": 999, "answer": "same"})
    assert e.value.status == 404
    assert read_labels(csv_path(workdir)) == {}


def test_snapshot_changes_are_pure():
    snap = lab.Snapshot(labels={3: "A_needed"}, extra={3: {"answer": "left", "left": "A"}}, history=[3], skipped=[5])
    frozen = repr(snap)
    new, saved = lab.record_answer(snap, 5, "same", "B")
    assert saved == {"seed": 5, "label": "cheap_ok", "answer": "same", "left": "B", "relabeled": False}
    assert new.labels == {3: "A_needed", 5: "cheap_ok"} and new.history == [3, 5] and new.skipped == []
    back, undone = lab.remove_answer(new)
    assert undone == {"seed": 5, "label": "cheap_ok", "answer": "same", "left": "B"} and back.history == [3]
    assert lab.skip_seed(back, 7).skipped == [7]
    with pytest.raises(lab.ApiError, match="already labeled"):
        lab.skip_seed(back, 3)
    assert repr(snap) == frozen  # the input was not changed


def test_shared_png_encoder_and_seed_parser():
    img = np.zeros((2, 3, 3), np.float32)
    img[0, 0] = [1.0, -1.0, np.nan]
    out = np.asarray(Image.open(_stdio.BytesIO(hio.png_bytes(img))))
    assert out.shape == (2, 3, 3) and out[0, 0].tolist() == [255, 0, 128] and out[1, 2].tolist() == [128] * 3
    assert lab.to_png(img, 6) == hio.png_bytes(img, scale=2)
    for good, value in ((7, 7), (" -3 ", -3), ("+12", 12), (np.int64(4), 4)):
        assert parse_seed(good) == value
    for bad in (True, 1.5, "x", "", "1e3", None, "+-1"):
        with pytest.raises(ValueError):
            parse_seed(bad)


def test_page_is_package_data(client):
    import importlib.resources
    import tomllib

    resource = importlib.resources.files("hybrid_jax.labeling").joinpath("page.html")
    assert resource.is_file() and client.get("/").get_data(as_text=True) == resource.read_text(encoding="utf-8")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    assert "page.html" in package_data["hybrid_jax.labeling"]


def test_labeling_functions_are_short():
    import ast
    import pathlib

    root = pathlib.Path(lab.__file__).parent
    long = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 40:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long


# ----------------------------------------------------------------------------- CLI without flask

def test_cli_without_flask_names_the_extra(tmp_path, monkeypatch, capsys):
    from experiments import label as cli

    monkeypatch.setitem(sys.modules, "flask", None)  # `import flask` now fails as if not installed
    assert cli.main(["--workdir", str(make_workdir(tmp_path / "run")), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[label]"' in err and "Flask" in err and "Traceback" not in err
    with pytest.raises(lab.FlaskMissing, match=r"\[label\]"):
        lab.create_app(tmp_path / "run")


def test_python_m_label_without_flask_exits_2(tmp_path):
    """`python -m experiments.label` in a fresh interpreter where `import flask` fails."""
    wrapper = ("import runpy, sys; sys.modules['flask'] = None; "
               "sys.argv = ['experiments.label'] + sys.argv[1:]; "
               "runpy.run_module('experiments.label', run_name='__main__', alter_sys=True)")
    proc = subprocess.run([sys.executable, "-c", wrapper, "--workdir", str(tmp_path / "run")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[label]"' in lines[0]
