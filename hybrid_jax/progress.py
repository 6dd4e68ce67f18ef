"""Progress that reaches the people watching: a tqdm bar on a terminal, and a log line (done/total,
rate, ETA) at most every `every_s` seconds, so a job under a scheduler or `nohup` shows it too."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

LOG_EVERY_S = 30.0


def track(items: Iterable, total: int, desc: str, unit: str, log: logging.Logger,
          every_s: float = LOG_EVERY_S) -> Iterator:
    """Yield `items` with a bar (terminals only) and a log line at most every `every_s` seconds."""
    start = last = time.monotonic()
    done, units = 0, unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")
    with tqdm(total=total, desc=desc, unit=unit, disable=None) as bar:
        for done, item in enumerate(items, 1):
            yield item
            bar.update()
            now = time.monotonic()
            if now - last >= every_s and done < total:
                rate = done / (now - start)
                log.info("%s: %d/%d %s done, %.3g %s/s, ETA %.0f s", desc, done, total, units, rate, units,
                         (total - done) / rate)
                last = now
    log.info("%s: %d %s in %.1f s", desc, done, units, time.monotonic() - start)
