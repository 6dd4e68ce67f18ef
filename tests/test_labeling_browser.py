"""Labeling page end to end in real headless Chromium, driven with the keyboard.

Needs Debian's `chromium` and `chromium-driver` packages (/usr/bin/chromium, /usr/bin/chromedriver)
and `selenium` (the `test` extra); skips with the reason when one is missing. Downloads nothing.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

for _path, _pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
    if not os.access(_path, os.X_OK):
        pytest.skip(f"{_path} not found: apt-get install -y {_pkg}", allow_module_level=True)
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    pytest.skip("selenium is not installed: pip install -e '.[test]'", allow_module_level=True)
pytest.importorskip("flask", reason="the labeling page needs flask")

from werkzeug.serving import make_server  # noqa: E402

from hybrid_jax import labeling as lab  # noqa: E402
from hybrid_jax.quality.labels import read_labels  # noqa: E402

RUN_SEED = 0


def pick_seeds(n: int) -> list[int]:
    """n seeds whose side order (run seed 0) is A,B,B,A,... so both orders are exercised early."""
    want = ["A", "B", "B", "A"]
    seeds, candidates = [], iter(range(1000))
    while len(seeds) < n:
        s = next(candidates)
        if lab.left_model(s, RUN_SEED) == want[len(seeds) % len(want)]:
            seeds.append(s)
    return seeds


SEEDS = pick_seeds(6)


@pytest.fixture
def server(tmp_path):
    """The app on 127.0.0.1:<free port> in a thread; A's fake images bright, B's dark."""
    workdir = tmp_path / "run"
    (workdir / "seeds").mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = len(SEEDS)
    lab.write_seeds(workdir / "seeds" / "seeds.npz", np.asarray(SEEDS, np.int64),
                    {"A": rng.uniform(0.2, 1.0, (n, 32, 32, 3)).astype(np.float32),
                     "B": rng.uniform(-1.0, -0.2, (n, 32, 32, 3)).astype(np.float32)})
    srv = make_server("127.0.0.1", 0, lab.create_app(workdir, seed=RUN_SEED), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}/", workdir
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def browser(tmp_path):
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1100,800",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, seed, labeled):
    """Until the page shows `seed` (None: all done) with both images loaded and `labeled` counted."""
    want = ["" if seed is None else str(seed), "1", str(labeled)]

    def shown(d):
        return d.execute_script(
            "const a = document.getElementById('app');"
            "return [a.dataset.seed, a.dataset.ready, document.getElementById('labeled').textContent];")

    try:
        WebDriverWait(driver, 10, poll_frequency=0.05).until(lambda d: shown(d) == want)
    except Exception:
        status = driver.find_element("id", "status").text
        raise AssertionError(f"page shows {shown(driver)}, expected {want}; status line: {status!r}") from None


def press(driver, key):
    ActionChains(driver).send_keys(key).perform()


def brightness(driver) -> list[float]:
    """Mean pixel value (0-255) of the left and the right image as displayed."""
    return driver.execute_script("""
        return ['left', 'right'].map((side) => {
          const img = document.getElementById('img-' + side);
          const c = document.createElement('canvas');
          c.width = img.naturalWidth; c.height = img.naturalHeight;
          const ctx = c.getContext('2d');
          ctx.drawImage(img, 0, 0);
          const px = ctx.getImageData(0, 0, c.width, c.height).data;
          let s = 0; for (let i = 0; i < px.length; i += 4) s += px[i] + px[i + 1] + px[i + 2];
          return s / (px.length / 4 * 3);
        });""")


def a_side_on_screen(driver) -> str:
    """Which side shows Model A, read from the displayed pixels (A's fake images are bright)."""
    means = brightness(driver)
    assert min(means) < 100 < 150 < max(means), means
    return "left" if means[0] > means[1] else "right"


def test_keyboard_labeling_undo_reload_resume(server, browser, tmp_path):
    url, workdir = server
    csv = workdir / "labels" / "human.csv"
    browser.get(url)
    wait_for(browser, SEEDS[0], 0)
    assert browser.find_element("id", "total").text == str(len(SEEDS))

    # answer with each key family; the expected label comes from the pixels on screen, not the code
    plan = [(Keys.ARROW_LEFT, "left"), ("3", "right"), (Keys.SPACE, "same"), ("1", "left")]
    expected, sides = {}, {}
    for i, (key, answer) in enumerate(plan):
        seed = SEEDS[i]
        sides[seed] = a_side_on_screen(browser)
        expected[seed] = "A_needed" if answer == sides[seed] else "cheap_ok"
        press(browser, key)
        wait_for(browser, SEEDS[i + 1], i + 1)
    assert set(sides.values()) == {"left", "right"}  # both randomised orders were on screen
    assert "A_needed" in expected.values() and "cheap_ok" in expected.values()
    assert read_labels(csv, known_seeds=SEEDS) == expected
    n_cheap = list(expected.values()).count("cheap_ok")
    assert browser.find_element("id", "share").text == f"{100 * n_cheap / 4:.1f} %"

    # Backspace undoes the last answer; answer again with "2"; "u" undoes that too
    press(browser, Keys.BACKSPACE)
    wait_for(browser, SEEDS[3], 3)
    assert "undid seed" in browser.find_element("id", "status").text
    press(browser, "2")
    wait_for(browser, SEEDS[4], 4)
    press(browser, "u")
    wait_for(browser, SEEDS[3], 3)
    del expected[SEEDS[3]]
    assert read_labels(csv, known_seeds=SEEDS) == expected

    # reload: the page resumes at the first unlabeled seed with the same sides
    browser.refresh()
    wait_for(browser, SEEDS[3], 3)
    assert a_side_on_screen(browser) == sides[SEEDS[3]]

    # "s" skips: the skipped seed comes after the unlabeled ones
    press(browser, "s")
    wait_for(browser, SEEDS[4], 3)
    press(browser, Keys.ARROW_RIGHT)
    expected[SEEDS[4]] = "A_needed" if lab.left_model(SEEDS[4], RUN_SEED) == "B" else "cheap_ok"
    wait_for(browser, SEEDS[5], 4)
    press(browser, "2")
    expected[SEEDS[5]] = "cheap_ok"
    wait_for(browser, SEEDS[3], 5)  # back to the skipped one

    lines = csv.read_text().splitlines()
    assert lines[0] == "seed,label,answer,left"
    assert read_labels(csv, known_seeds=SEEDS) == expected
    rows = {int(r.split(",")[0]): r.split(",")[1:] for r in lines[1:]}
    assert rows[SEEDS[0]] == [expected[SEEDS[0]], "left", lab.left_model(SEEDS[0], RUN_SEED)]

    shot = tmp_path / "labeling.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 1000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def brighter_side(driver) -> str:
    """The side whose image is brighter on screen (the options page's fake reference is the brightest image)."""
    means = brightness(driver)
    assert abs(means[0] - means[1]) > 20, means
    return "left" if means[0] > means[1] else "right"


def test_the_options_page_labels_each_option_beside_the_reference(tmp_path, browser):
    """--compare options: each pair names its option; the keys label (seed, option) rows."""
    from test_labeling_options import OPTIONS, SEEDS as OPTION_SEEDS, make_workdir

    from hybrid_jax.quality import labels as labels_lib

    workdir = make_workdir(tmp_path / "run")
    srv = make_server("127.0.0.1", 0, lab.create_app(workdir, seed=RUN_SEED, source=lab.OPTIONS), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get(f"http://127.0.0.1:{srv.server_port}/")
        seed = OPTION_SEEDS[0]
        wait_for(browser, seed, 0)
        assert browser.find_element("id", "total").text == str(len(OPTION_SEEDS) * (len(OPTIONS) - 1))
        assert browser.find_element("id", "option-box").text == f"option {OPTIONS[1]} vs {OPTIONS[0]}"
        press(browser, Keys.ARROW_LEFT if brighter_side(browser) == "left" else Keys.ARROW_RIGHT)  # reference better
        wait_for(browser, seed, 1)
        assert browser.find_element("id", "option").text == OPTIONS[2]
        press(browser, Keys.SPACE)
        wait_for(browser, seed, 2)
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
    labels = labels_lib.read_keyed_labels(workdir / lab.OPTIONS_FILE, labels_lib.OPTION_KEY)[0]
    assert labels == {(seed, OPTIONS[1]): "A_needed", (seed, OPTIONS[2]): "cheap_ok"}
