"""Orbax checkpoints of a run: one per saved epoch under `<run>/checkpoints/<epoch>/`,
keeping the last `keep` plus the best by a metric, restored into an abstract template so
that a resumed run gets the shardings of *its* devices, not those it was saved from.

A checkpoint has two items: `arrays` (any pytree of arrays: the train state, the fitted
scaler, ...) and `meta` (JSON: epoch, history, spec text, dataset info, stopping
bookkeeping). Orbax writes to a temporary folder and renames it when complete, so a kill
at any moment leaves every earlier checkpoint intact.

Saves are asynchronous: `save` copies the arrays to host memory (the next epoch may
donate them) and hands the write to one background thread; at most one save is in
flight. `Cadence` decides which epochs save. Orbax is imported on first use (~0.5 s);
its logging is captured while it works, never configured globally.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jax

from jaxpipe.core.step import TrainState
from jaxpipe.errors import EnvironmentProblem, JaxpipeError
from jaxpipe.imports import import_heavy
from jaxpipe.runner.cadence import _MEMORY_BUDGET
from jaxpipe.runner.orbax_guard import (
    InlineExecutor,
    KeepEpochs,
    captured_logs,
    disk_problem,
    drop_loop_closed_tracebacks,
)

__all__ = [
    "CheckpointStore",
    "Restored",
    "abstract_like",
    "state_to_tree",
    "tree_to_state",
    "saved_epochs",
    "check_store_path",
    "CORRUPT_DIR",
]

CORRUPT_DIR = "checkpoints.unreadable"  # unreadable checkpoints are moved here, not deleted


def _ocp() -> Any:
    """orbax.checkpoint, imported when a run first checkpoints (not by `plan`, `predict`),
    never beside flax's import on another thread (jaxpipe/imports.py says why)."""
    return import_heavy("orbax.checkpoint")


@dataclass(frozen=True)
class Restored:
    """What a checkpoint gave back: its epoch, its arrays (in the template's shardings)
    and its JSON metadata."""

    epoch: int
    arrays: Any
    meta: dict[str, Any]


def state_to_tree(state: TrainState) -> dict[str, Any]:
    """The state as plain arrays (the typed PRNG key as its raw uint32 key data)."""
    return {
        "step": state.step,
        "params": state.params,
        "opt_state": state.opt_state,
        "key": jax.random.key_data(state.key),
    }


def tree_to_state(tree: Mapping[str, Any], like: TrainState) -> TrainState:
    """Inverse of `state_to_tree`; `like` supplies the key's PRNG implementation."""
    impl = jax.random.key_impl(like.key)
    return TrainState(
        tree["step"],
        tree["params"],
        tree["opt_state"],
        jax.random.wrap_key_data(tree["key"], impl=impl),
    )


def abstract_like(tree: Any) -> Any:
    """Shapes, dtypes and shardings of `tree`'s arrays: the restore target."""

    def leaf(x: Any) -> Any:
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree.map(leaf, tree)


def host_copy(arrays: Any) -> Any:
    """A copy of `arrays` in pinned host memory, in their own shardings (one call for the
    whole tree; a GPU copies by DMA, asynchronously, and a later donation waits for it):
    a snapshot never holds a second state on the device, where the plan does not count
    one (+15 GiB per device for a 1.44 B adam model). Orbax saves these arrays
    as it saves device ones. A device without pinned host memory gets a device copy."""
    kinds = {m.kind for m in jax.local_devices()[0].addressable_memories()}
    if "pinned_host" not in kinds:
        return jax.tree.map(lambda a: jax.device_put(a, a.sharding, may_alias=False), arrays)
    host = jax.tree.map(lambda a: a.sharding.with_memory_kind("pinned_host"), arrays)
    return jax.device_put(arrays, host, may_alias=False)


def check_store_path(directory: str) -> None:
    """A path that exists and is not a folder cannot hold checkpoints (JaxpipeError)."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise JaxpipeError(
            f"{directory}: exists and is not a directory, but the run keeps its "
            "checkpoints there; move or rename that file, or choose another --out"
        )


class CheckpointStore:
    """The checkpoints folder of one run.

    keep: how many of the newest checkpoints to keep; best_metric / best_mode: also keep
    the one with the best value of this metric ("min" or "max"); the metrics are passed
    to `save`. A path that exists and is not a folder is refused (JaxpipeError).
    `enabled=False`: a run whose directory is thrown away (`jaxpipe.fit` without `out`)
    keeps and writes nothing, and imports no orbax.
    """

    def __init__(
        self,
        directory: str,
        *,
        keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "min",
        enabled: bool = True,
    ):
        self.directory = os.path.abspath(directory)
        self.enabled = enabled
        check_store_path(self.directory)
        self.best_metric, self.best_mode = best_metric, best_mode
        # (value, epoch) of the best saved checkpoint. Tracked here and stored in each
        # checkpoint's meta because orbax does not reload saved metrics into its
        # preservation policies when a manager is reopened (0.12).
        self.best: tuple[float, int] | None = None
        self._keep_best = KeepEpochs()
        # One writer thread, one save in flight: a save never queues behind several others.
        # A multi-process run writes on the main thread: orbax's save synchronises the
        # processes, and beside the next epoch's collectives on another thread the two
        # processes could order them differently and wait on each other for ever.
        self._writer = (
            ThreadPoolExecutor(1, thread_name_prefix="jaxpipe-checkpoint")
            if jax.process_count() == 1
            else InlineExecutor()
        )
        self._pending: Future | None = None
        self._written = 0
        self._keep = keep
        self._snapshots: collections.deque = collections.deque()  # sized by the first
        drop_loop_closed_tracebacks()
        self._manager: Any = None
        # Orbax is imported and the manager opened on the writer thread (half a second
        # of imports, overlapping the compile); anything that needs it waits first.
        self._doing = "open the checkpoints folder"
        if enabled:
            self._pending = self._writer.submit(self._open, keep)

    def _open(self, keep: int) -> None:
        ocp = _ocp()
        policies = import_heavy("orbax.checkpoint.checkpoint_managers")

        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(
                [policies.LatestN(n=keep), self._keep_best]
            ),
            cleanup_tmp_directories=True,  # partial saves of a killed run
            create=True,
            # The writer thread is the asynchrony; orbax's own would add a second thread
            # per save and return before the files are committed.
            enable_async_checkpointing=False,
        )
        with captured_logs():
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    def epochs(self) -> list[int]:
        """Epochs with a complete checkpoint, oldest first (after any save in flight)."""
        if not self.enabled:
            return []
        self.wait()
        return sorted(self._manager.all_steps())

    def save(
        self, epoch: int, arrays: Any, meta: dict, metrics: dict | None, *, copy: bool = True
    ) -> None:
        """Starts saving `arrays` and `meta` as epoch `epoch` and returns: the arrays are
        copied to host memory first (the caller may then donate them), and the write
        goes to the writer thread after the previous save is committed (`wait`)."""
        self.snapshot(epoch, arrays, meta, metrics, copy=copy)
        self.flush(every=False)

    def snapshot(
        self, epoch: int, arrays: Any, meta: dict, metrics: dict | None, *, copy: bool = True
    ) -> None:
        """Keeps epoch `epoch`'s checkpoint in memory only (a pinned host copy: `host_copy`),
        among the newest `keep`, for `flush` to write if
        the run needs them (a divergence writes the last good epochs). A state over
        `_MEMORY_BUDGET` keeps only the newest snapshot: `save` writes it at once.
        copy=False: nothing donates `arrays` later (`held_in_memory`); held as they are."""
        if not self.enabled:
            return
        if copy:
            if self._snapshots.maxlen == 1:
                self._snapshots.clear()  # a big state: never two host copies at once
            arrays = host_copy(arrays)
        if self._snapshots.maxlen is None:
            size = sum(getattr(a, "nbytes", 0) for a in jax.tree.leaves(arrays))
            depth = self._keep if size * self._keep <= _MEMORY_BUDGET else 1
            self._snapshots = collections.deque(maxlen=depth)
        # Only lists (the history) are copied: the caller goes on appending to them, and
        # a deep copy per epoch would cost O(epochs) each time. Nothing else in `meta`
        # may change after this call.
        meta = {k: list(v) if isinstance(v, list) else v for k, v in meta.items()}
        self._snapshots.append((epoch, arrays, meta, metrics))

    def flush(self, *, every: bool) -> None:
        """Writes the newest snapshot (every=False) or every snapshot not yet written,
        oldest first (every=True), each after the previous write is committed."""
        todo = [s for s in self._snapshots if s[0] > self._written]
        for epoch, arrays, meta, metrics in todo if every else todo[-1:]:
            self._submit(epoch, arrays, meta, metrics)

    def _submit(
        self, epoch: int, arrays: Any, meta: dict[str, Any], metrics: dict[str, float] | None
    ) -> None:
        self.wait()
        if self.best_metric is not None and metrics is not None:
            value = float(metrics[self.best_metric])
            better = self.best is None or (
                value < self.best[0] if self.best_mode == "min" else value > self.best[0]
            )
            if better:
                self.best = (value, epoch)
        self._keep_best.epochs = {self.best[1]} if self.best else set()
        meta = dict(meta, checkpoint_best=list(self.best) if self.best else None)
        ocp = _ocp()
        args = ocp.args.Composite(
            arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)
        )
        self._written = epoch
        self._doing = f"save the checkpoint of epoch {epoch}"
        self._pending = self._writer.submit(self._write, epoch, args)

    def _write(self, epoch: int, args: Any) -> None:
        with captured_logs():
            self._manager.save(epoch, args=args, force=True)

    def wait(self) -> None:
        """Blocks until the save in flight is on disk and committed. A full disk raises
        EnvironmentProblem (exit 4) with the partial save removed, earlier checkpoints
        intact; any other failure of the write is raised as it was."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        with self._disk_errors(self._doing):
            pending.result()

    @contextlib.contextmanager
    def _disk_errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except Exception as e:
            problem = disk_problem(e)
            if problem is None:
                raise
            # Free what the partial save took; committed checkpoints stay for --resume.
            for tmp in glob.glob(
                os.path.join(glob.escape(self.directory), "*.orbax-checkpoint-tmp*")
            ):
                shutil.rmtree(tmp, ignore_errors=True)
            saved = saved_epochs(self.directory)
            kept = (
                f"the checkpoints up to epoch {saved[-1]} are intact"
                if saved
                else "no checkpoint was written yet, so it starts again from epoch 1"
            )
            what = {
                "full": f"the disk is full (no space left to {doing}); free some space",
                "too large": f"a file-size limit (`ulimit -f`: File too large) stopped the "
                f"write to {doing}; raise the limit",
            }[problem]
            raise EnvironmentProblem(
                f"{self.directory}: {what}, then continue the run with --resume ({kept})"
            ) from None

    def read_meta(self, epoch: int) -> dict[str, Any]:
        self.wait()
        ocp = _ocp()
        with captured_logs():
            out = self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def restore(
        self, template: Callable[[dict[str, Any]], Any], warn: Callable[[str], None]
    ) -> Restored | None:
        """The newest readable checkpoint, or None if there is none. `template(meta)`
        gives the restore target for a checkpoint's meta: a pytree of
        `jax.ShapeDtypeStruct`s with shardings (see `abstract_like`).

        An unreadable newest checkpoint (a corrupted or truncated file) is reported through
        `warn` (one line; orbax's own logs are captured), moved to
        `<run>/checkpoints.unreadable/` and the previous one is tried."""
        ocp = _ocp()
        tried: list[int] = []
        last_error = ""
        for epoch in reversed(self.epochs()):
            try:
                meta = self.read_meta(epoch)
                if meta.get("epoch") != epoch:
                    raise ValueError(f"metadata says epoch {meta.get('epoch')}")
                args = ocp.args.Composite(arrays=ocp.args.StandardRestore(template(meta)))
                with captured_logs():
                    arrays = self._manager.restore(epoch, args=args)["arrays"]
            except Exception as e:  # orbax/tensorstore raise many types for a bad file
                reason = " ".join(str(e).split())[:200]
                last_error = f"{type(e).__name__}: {reason}"
                warn(
                    f"checkpoint {self.directory}/{epoch} is unreadable "
                    f"({type(e).__name__}: {reason}); falling back to the previous one"
                )
                tried.append(epoch)
                continue
            self._set_aside(tried)
            best = meta.get("checkpoint_best")
            self.best = (float(best[0]), int(best[1])) if best else None
            return Restored(epoch, arrays, meta)
        if tried:
            # Nothing is moved aside here: when every checkpoint fails, the cause may be
            # this run (a layout the checkpoints cannot be restored into), not the files.
            raise JaxpipeError(
                f"{self.directory}: no checkpoint could be restored (tried epochs "
                f"{', '.join(map(str, tried))}; last error {last_error}); start a fresh run "
                "in another directory, or resume with the devices and spec it was saved with"
            )
        return None

    def _set_aside(self, epochs: Sequence[int]) -> None:
        """Moves unreadable checkpoints out of the way, so the resumed run can save those
        epochs again, and keeps them for inspection."""
        if not epochs:
            return
        aside = os.path.join(os.path.dirname(self.directory), CORRUPT_DIR)
        os.makedirs(aside, exist_ok=True)
        for epoch in epochs:
            src = os.path.join(self.directory, str(epoch))
            dst = os.path.join(aside, str(epoch))
            if os.path.exists(dst):
                shutil.rmtree(dst)
            shutil.move(src, dst)
        self._manager.reload()

    def close(self) -> None:
        """Waits for the save in flight, then releases the writer and orbax's manager."""
        try:
            self.wait()
        finally:
            self._writer.shutdown(wait=True)
            if self._manager is not None:
                self._manager.close()


def saved_epochs(directory: str) -> list[int]:
    """Epochs with a committed checkpoint in `directory`, read from the folder names
    alone (cheap; orbax's temporary folders of unfinished saves are not counted)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())
