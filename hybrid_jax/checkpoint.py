"""Orbax checkpoints tied to the config that made them.

A checkpoint directory holds `config.json` (the config of the model it belongs to) and
orbax step folders. Restoring under another config fails with the differing fields named;
a corrupt newest step falls back to the previous complete one, with a warning.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

from hybrid_jax import config as config_lib
from hybrid_jax import io, sharding

log = logging.getLogger("hybrid_jax.checkpoint")


class CheckpointMismatch(ValueError):
    """The checkpoint was written under a different config."""


class Checkpointer:
    """Save/restore pytrees at integer steps in `directory`, guarded by `config`."""

    def __init__(self, directory, config: dict, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self.config = config
        self._check_config()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False))

    def _check_config(self) -> None:
        path = self.directory / "config.json"
        if path.exists():
            stored = io.read_json(path)
            differing = config_lib.diff(stored, self.config)
            if differing:
                raise CheckpointMismatch(
                    f"checkpoint in {self.directory} was written under another config; differing fields: "
                    + "; ".join(differing) + ". Use another --workdir, or delete that folder to retrain.")
        else:
            io.write_json(path, self.config)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any) -> None:
        state = jax.tree.map(np.asarray, flax.serialization.to_state_dict(tree))
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, int | None]:
        """Newest complete checkpoint (or `step`) restored into `template`'s structure; (None, None) if none.

        `template` may be concrete or abstract (`jax.eval_shape`): only shapes and dtypes are used.
        """
        candidates = [step] if step is not None else self.steps()[::-1]
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype),
                              flax.serialization.to_state_dict(template))
        for s in candidates:
            try:
                restored = self._manager.restore(s, args=ocp.args.StandardRestore(target))
                return flax.serialization.from_state_dict(template, restored), s
            except Exception as e:  # orbax raises many kinds on a damaged step
                log.warning("checkpoint step %d in %s is unreadable (%s: %s); falling back to an earlier one",
                            s, self.directory, type(e).__name__, str(e)[:200])
                self._discard(s)
        return None, None

    def _discard(self, step: int) -> None:
        """Move a damaged step aside (kept for inspection) so it is never picked again."""
        src = self.directory / str(step)
        if src.exists() and sharding.is_writer():
            dst = self.directory / f"corrupt-{step}"
            shutil.rmtree(dst, ignore_errors=True)
            src.rename(dst)
        self._manager.reload()
