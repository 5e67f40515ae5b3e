"""The epoch loop shared by adversarial training and fine-tuning.

Resumable: the state is checkpointed after every epoch and when SIGTERM or
SIGINT arrives (after the step in flight finishes); running the same command
again restores the latest checkpoint and continues at the exact batch where
it stopped (the data order is a function of ``(seed, epoch)`` and the step's
random key of ``(seed, step)``, folded in by the step itself), so an interrupted run ends with the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import sys
from typing import Callable

import jax
import numpy as np

from rwsjax import distributed
from rwsjax.data.batching import steps_per_epoch, train_batches
from rwsjax.data.sources import Split
from rwsjax.train import dispatch, sharding
from rwsjax.train.checkpoint import CheckpointError, CheckpointMismatchError, Checkpoints
from rwsjax.report.progress import bar as progress_bar
from rwsjax.train.state import TrainState


class Preempted(RuntimeError):
    """Raised after a checkpoint was written in response to SIGTERM/SIGINT.

    Attributes:
      signal: ``"SIGTERM"`` (a scheduler's preemption notice), ``"SIGINT"`` (Ctrl-C) or None (another process
        of a multi-process run was told to stop).
    """

    def __init__(self, message: str, signal: str | None = None):
        super().__init__(message)
        self.signal = signal

    @property
    def exit_status(self) -> int:
        """130 after SIGINT (the user stopped the run: ``launch/run_until_done.sh`` does not restart it), 143
        otherwise (a preemption: re-running the same command resumes)."""
        return 130 if self.signal == "SIGINT" else 143


class _StopFlag:
    requested: str | None = None


@contextlib.contextmanager
def stop_on_signal():
    """Turn SIGTERM/SIGINT into a flag the loop checks between steps."""
    flag = _StopFlag()

    def handler(signum, _frame):
        flag.requested = signal.Signals(signum).name

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: no signal handling
            pass
    try:
        yield flag
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def _restore_newest_readable(ckpt: Checkpoints, name: str, state, best, replicated):
    """Restore the newest checkpoint that reads; a damaged one is skipped with a warning (never deleted)."""
    errors = []
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            return ckpt.restore(step, state=state, best=best, sharding=replicated)
        except CheckpointMismatchError:
            raise  # another model's checkpoint: an older one would not match either
        except CheckpointError as e:
            errors.append(str(e))
            print(f"[{name}] warning: {e}; trying an older checkpoint", file=sys.stderr)
    raise CheckpointError(f"[{name}] no readable checkpoint in {ckpt.directory}: " + " | ".join(errors) +
                          ". Move the directory away to start this stage over")


def fit(
    *,
    name: str,
    directory: str,
    state: TrainState,
    train_step: Callable,
    train: Split,
    batch_size: int,
    epochs: int,
    seed: int,
    mesh,
    validate: Callable[[dict], dict],
    select: str,
    writer=None,
    learning_rate: Callable[[int], float] | None = None,
    in_flight: int = 1,
) -> tuple[dict, list[dict]]:
    """Train for ``epochs`` epochs, keep the variables of the best validation epoch.

    Args:
      name: stage name used in progress bars, logs and TensorBoard tags.
      directory: checkpoint directory of this stage (created if missing).
      state: initial :class:`TrainState` (ignored if a checkpoint exists).
      train_step: jitted ``(state, images_u8, labels, key) -> (state, metrics)``, given the same base key
        ``PRNGKey(seed)`` every step (it folds in ``state.step`` itself, :func:`rwsjax.train.steps.make_train_step`).
      train: training split (uint8 images ``[N,H,W,C]``, int32 labels ``[N]``).
      validate: ``variables -> {metric: value}`` on the validation split.
      select: the validation metric to maximize (e.g. ``"robust_accuracy"``).
      writer: a :class:`rwsjax.report.metrics.MetricWriter` (or None): train loss and accuracy (%) per step,
        validation accuracies (%) and ``learning_rate`` per epoch.
      learning_rate: ``step -> learning rate`` (the optimizer's schedule, :func:`rwsjax.train.state.lr_schedule`)
        for the log.
      in_flight: steps queued on the device before the oldest one's metrics are read back (``1``: the
        host slices and queues batch t+1 while step t runs; ``0``: wait for every step).  The loss check,
        progress bar and logs run that many steps late; checkpoints and results are unchanged.

    Returns:
      ``(best_variables, history)``: host (NumPy) variables of the epoch with the
      highest ``validate(...)[select]``, and one dict per epoch.

    Raises:
      Preempted: SIGTERM/SIGINT arrived; a checkpoint of the current step was written.
      FloatingPointError: the loss became NaN/inf; the last good checkpoint is kept.
      ValueError: ``in_flight < 0``.
    """
    if in_flight < 0:
        raise ValueError(f"[{name}] in_flight must be >= 0 (0: wait for every step), got {in_flight}")
    spe = steps_per_epoch(len(train), batch_size)
    ckpt = Checkpoints(directory)
    best = jax.device_get(state.variables)
    meta = {"history": [], "best_metric": None, "best_epoch": None}
    if ckpt.latest_step() is not None:
        state, best, meta = _restore_newest_readable(ckpt, name, state, best, sharding.replicated(mesh))
        best = jax.device_get(best)
        print(f"[{name}] resumed from {directory} at step {int(state.step)}")
    # Fresh device buffers: the jitted step donates the state, which must not delete the caller's arrays.
    state = sharding.replicate(jax.device_get(state), mesh)
    # The step folds its own step count into this key (steps.make_train_step): one device array for the run.
    base_key = sharding.replicate(np.asarray(jax.random.PRNGKey(seed)), mesh)
    step = int(state.step)
    first_epoch, offset = divmod(step, spe)
    rows = sharding.local_rows(mesh, batch_size)  # this process's share of every global batch

    def save():
        ckpt.save(step, state=state, best=best, meta=meta)

    with stop_on_signal() as stop:
        for epoch in range(first_epoch, epochs):
            bar = progress_bar(total=spe, initial=offset, desc=f"{name} {epoch + 1}/{epochs}")
            sums = {}
            pending = collections.deque()  # (step, device metrics) queued but not read back yet

            def finish():
                """Host side of the oldest queued step: read its metrics, check them, log them."""
                done, metrics = pending.popleft()
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if "accuracy" in metrics:  # in %, as every accuracy rwsjax reports
                    metrics["accuracy"] *= 100
                if not np.isfinite(metrics["loss"]):
                    ckpt.close()
                    raise FloatingPointError(
                        f"[{name}] loss is {metrics['loss']} at step {done} (epoch {epoch + 1}); "
                        f"stopped, the last good checkpoint in {directory} is kept. "
                        "Lower the learning rate or check the data.")
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                if writer is not None:
                    writer.scalars(done, {f"{name}/train_{k}": v for k, v in metrics.items()})
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.1f}", refresh=False)

            batches = train_batches(train, batch_size, seed=seed, epoch=epoch, start_step=offset, rows=rows)
            for images, labels in batches:
                batch = sharding.shard_batch((images, labels), mesh)  # the one (explicit) copy per step
                with dispatch.guard():
                    state, metrics = train_step(state, *batch, base_key)
                step += 1
                pending.append((step, metrics))
                while len(pending) > in_flight:
                    finish()
                # All processes must stop at the same step (the checkpoint is a collective).
                if distributed.any_process(stop.requested is not None):
                    while pending:
                        finish()
                    save()
                    ckpt.close()
                    why = stop.requested or "a stop signal on another process"
                    raise Preempted(f"[{name}] {why} received: checkpoint written at step {step} in "
                                    f"{directory}; run the same command again to continue", stop.requested)
            while pending:
                finish()
            bar.close()
            n = max(1, spe - offset)
            offset = 0
            record = {"epoch": epoch + 1, **{f"train_{k}": v / n for k, v in sums.items()}}
            record.update({f"val_{k}": v for k, v in validate(state.variables).items()})
            meta["history"].append(record)
            if writer is not None:  # accuracies in % (validate's already are); no counts
                writer.scalars(step, {f"{name}/{k}": v for k, v in record.items()
                                      if k.startswith("val_") and k.endswith(("accuracy", "loss"))})
                if learning_rate is not None:
                    writer.scalars(step, {f"{name}/learning_rate": float(learning_rate(step - 1))})
                writer.flush()
            if meta["best_metric"] is None or record[f"val_{select}"] > meta["best_metric"]:
                meta["best_metric"], meta["best_epoch"] = record[f"val_{select}"], epoch + 1
                best = jax.device_get(state.variables)
            print(f"[{name}] epoch {epoch + 1}/{epochs} " +
                  " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
            save()
    ckpt.close()
    return best, meta["history"]
