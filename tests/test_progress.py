"""Progress lines reach the log on time, also while one long item is still running."""

from __future__ import annotations

import logging
import time

from hybrid_jax import progress


def test_a_line_every_interval_while_an_item_runs_and_a_summary_at_the_end(caplog):
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        got = []
        for x in progress.track(range(3), 3, "job", "batch", log, every_s=0.05):
            if x == 1:
                time.sleep(0.5)  # one slow item: lines keep coming while it runs
            got.append(x)
    lines = [r.getMessage() for r in caplog.records]
    assert got == [0, 1, 2]
    during = [m for m in lines if m.startswith("job: 1/3 batches done")]
    assert len(during) >= 3 and "ETA" in during[0]  # reported while item 1 ran: one finished, its rate
    assert lines[-1].startswith("job: 3 batches in ")
    n = len(lines)
    time.sleep(0.2)
    assert len(caplog.records) == n  # the watcher stopped with the loop


def test_before_the_first_item_finishes_the_line_says_how_long_it_runs(caplog):
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        for _ in progress.track(range(1), 1, "seeds", "batch", log, every_s=0.05):
            time.sleep(0.2)
    assert any("0/1 batches done, the first batch running for" in r.getMessage() for r in caplog.records)
