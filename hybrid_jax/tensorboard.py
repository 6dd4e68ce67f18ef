"""TensorBoard event files under `<workdir>/tb/<name>`, so that a job without a terminal can be
watched from a browser (`tensorboard --logdir <workdir>/tb`).

Written with tensorboardX (no TensorFlow needed). Without it, one info line and no files: the run
itself never depends on TensorBoard. In a multi-process run only process 0 writes.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
import time
from pathlib import Path
from typing import Callable

import jax

log = logging.getLogger("hybrid_jax.tensorboard")

ScalarWriter = Callable[[str, float, int], None]  # (tag, value, step) -> None


def _no_writer(tag: str, value: float, step: int) -> None:
    """What a run writes to TensorBoard when it cannot (package absent, or not process 0)."""


@functools.cache
def _tensorboardx():
    """(EventsWriter, event_pb2, scalar) of tensorboardX, or None with one info line per process: TensorBoard is
    an optional extra, so a run without it is not warned about it."""
    try:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2
        from tensorboardX.summary import scalar
    except ImportError:
        log.info("tensorboardX is not installed: no TensorBoard event files (pip install -e '.[tensorboard]')")
        return None
    return EventsWriter, event_pb2, scalar


def scalar_writer(logdir: Path) -> ScalarWriter:
    """(tag, value, step) -> None, appending scalars to a new event file in `logdir`. Each call writes
    and flushes at once (no writer thread): a killed run keeps all it logged."""
    if jax.process_index() != 0:
        return _no_writer
    if (tbx := _tensorboardx()) is None:
        return _no_writer
    EventsWriter, event_pb2, scalar = tbx
    Path(logdir).mkdir(parents=True, exist_ok=True)
    events = EventsWriter(str(Path(logdir) / "events"), f".{os.getpid()}")

    def write(tag: str, value: float, step: int) -> None:
        events.write_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=scalar(tag, float(value))))
        events.flush()

    return write


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] from every event file in `logdir`, in file and write order."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):  # TFRecord: length u64, its crc u32, payload, payload crc u32
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out
