"""Progress that reaches the people watching: a tqdm bar on a terminal, and a log line (done/total,
rate, ETA) every `every_s` seconds, so a job under a scheduler or `nohup` shows it too, also while one
item (a paper-scale batch of Model A: minutes) is still running."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

LOG_EVERY_S = 30.0


def _line(desc: str, done: int, total: int, unit: str, units: str, elapsed: float) -> str:
    if not done:
        return f"{desc}: 0/{total} {units} done, the first {unit} running for {elapsed:.0f} s"
    rate = done / elapsed
    return f"{desc}: {done}/{total} {units} done, {rate:.3g} {units}/s, ETA {(total - done) / rate:.0f} s"


def track(items: Iterable, total: int, desc: str, unit: str, log: logging.Logger,
          every_s: float = LOG_EVERY_S) -> Iterator:
    """Yield `items` with a bar (terminals only) and, from a watcher thread, a log line every `every_s`
    seconds until the last item is done."""
    start = time.monotonic()
    done, units = 0, unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")
    stop = threading.Event()

    def watch():
        while not stop.wait(every_s):
            log.info("%s", _line(desc, done, total, unit, units, time.monotonic() - start))

    watcher = threading.Thread(target=watch, name=f"progress {desc}", daemon=True)
    watcher.start()
    try:
        with tqdm(total=total, desc=desc, unit=unit, disable=None) as bar:
            for i, item in enumerate(items):
                yield item
                done = i + 1  # read by the watcher: items finished
                bar.update()
    finally:
        stop.set()
        watcher.join()
    log.info("%s: %d %s in %.1f s", desc, done, units, time.monotonic() - start)
