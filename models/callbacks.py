"""The Trainer's callbacks: what Keras' own (EarlyStopping, ReduceLROnPlateau,
BackupAndRestore, the optimizer's moving average) leave to the caller.

`TrainingRecord` keeps their state on disk so that a run killed and resumed still exports
the best epoch of the whole run, holds the run to its CPU-time budget, and writes the run's
record (features.TRAINING_REPORT);
`EvaluateAverage` has the epochs judged by the weights' moving average; `WorkersMeet`
holds the workers of a cluster together at the end. `models/trainer.py` orders them.
"""
import io
import json
import logging
import math
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from models import features

logger = logging.getLogger(__name__)


def write_json(path: str, value) -> None:
    """Atomically: a reader (or a resume after kill -9) never sees half a file."""
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(value, indent=1))
    tf.io.gfile.rename(tmp, path, overwrite=True)


class TrainingRecord(tf_keras.callbacks.Callback):
    """One log line per epoch, the run's history, and the state Keras keeps in memory only.

    BackupAndRestore brings back the model and optimizer after a kill, not the other
    callbacks: EarlyStopping's best epoch and weights and ReduceLROnPlateau's counters
    would restart from nothing, and the export could be a worse epoch than one before
    the kill. This keeps them in `state_dir` after every epoch and puts them back when
    training starts. Place it after those callbacks and before BackupAndRestore, so the
    state on disk is never older than the backup it belongs to.

    With `cpu_budget_minutes` it also stops training before an epoch that would take the
    run's CPU time (this history's, so epochs before a resume count) past the budget, and
    projects after each epoch how many the budget holds (`epochs_in_budget`: what the
    cosine_budget schedule decays over). Keras has no such stop; it belongs here, with the
    history it is judged from.
    """

    _EARLY_STOPPING = ("wait", "best", "best_epoch")
    _REDUCE_LR = ("wait", "best", "cooldown_counter")

    def __init__(self, state_dir: str, report_dir: str,
                 early_stopping: tf_keras.callbacks.EarlyStopping,
                 reduce_lr: Optional[tf_keras.callbacks.ReduceLROnPlateau] = None,
                 extra: Optional[Dict[str, Any]] = None, on_epoch=None,
                 cpu_budget_minutes: float = 0.0):
        super().__init__()
        self.cpu_budget_minutes = cpu_budget_minutes
        self._budget_stop: Optional[str] = None
        self.on_epoch = on_epoch
        self.state_dir, self.report_dir = state_dir, report_dir
        self.early_stopping, self.reduce_lr = early_stopping, reduce_lr
        self.extra = extra or {}
        self.history: List[Dict[str, float]] = []
        self._state_path = os.path.join(state_dir, "training_state.json")
        self._weights_path = os.path.join(state_dir, "best_weights.npz")

    def on_train_begin(self, logs=None):
        tf.io.gfile.makedirs(self.state_dir)
        tf.io.gfile.makedirs(self.report_dir)
        self.history, self._budget_stop = [], None
        if not tf.io.gfile.exists(self._state_path):
            return
        with tf.io.gfile.GFile(self._state_path, "r") as f:
            state = json.loads(f.read())
        self.history = state["history"]
        for name in self._EARLY_STOPPING:
            setattr(self.early_stopping, name, state["early_stopping"][name])
        if self.reduce_lr is not None and state.get("reduce_lr"):
            for name in self._REDUCE_LR:
                setattr(self.reduce_lr, name, state["reduce_lr"][name])
        if self.early_stopping.restore_best_weights and tf.io.gfile.exists(self._weights_path):
            with tf.io.gfile.GFile(self._weights_path, "rb") as f:
                saved = np.load(io.BytesIO(f.read()))
            self.early_stopping.best_weights = [saved[f"arr_{i}"]
                                                for i in range(len(saved.files))]
        logger.info("resuming after epoch %d (best so far: epoch %d, eval loss %.4f)",
                    len(self.history), self.early_stopping.best_epoch + 1,
                    self.early_stopping.best)

    def on_epoch_begin(self, epoch, logs=None):
        # A kill between this callback's save and BackupAndRestore's runs that epoch again:
        # its first result leaves the history (the counters and best weights keep it, as a
        # real epoch's result and weights).
        self.history = [e for e in self.history if e["epoch"] <= epoch]
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        record = {"epoch": epoch + 1, **logs,
                  "learning_rate": float(tf_keras.backend.get_value(
                      self.model.optimizer.learning_rate)),
                  "cpu_seconds": time.process_time() - self._cpu,
                  "wall_seconds": time.perf_counter() - self._wall}
        self.history.append(record)
        # Before the state is saved: the projection is part of the history a resume reads.
        if self.cpu_budget_minutes and epoch + 1 < self.params["epochs"]:
            self._project_the_budget(record)
        es = self.early_stopping
        best = es.best_epoch == epoch
        logger.info("epoch %d: train loss %.4f, eval loss %s%s, %.1f CPU-min%s", epoch + 1,
                    logs.get("loss", float("nan")),
                    "%.4f nats/char" % logs["val_loss"] if "val_loss" in logs else "n/a",
                    " (best)" if best else "", record["cpu_seconds"] / 60,
                    f" (the budget holds {record['budget_epochs']} epochs)"
                    if "budget_epochs" in record else "")
        if best and es.restore_best_weights and es.best_weights is not None:
            tmp, buffer = self._weights_path + ".tmp.npz", io.BytesIO()
            np.savez(buffer, *es.best_weights)  # zip needs a seekable file; GFile is not
            with tf.io.gfile.GFile(tmp, "wb") as f:
                f.write(buffer.getvalue())
            tf.io.gfile.rename(tmp, self._weights_path, overwrite=True)
        state = {"history": self.history,
                 "early_stopping": {n: _plain(getattr(es, n)) for n in self._EARLY_STOPPING}}
        if self.reduce_lr is not None:
            state["reduce_lr"] = {n: _plain(getattr(self.reduce_lr, n)) for n in self._REDUCE_LR}
        write_json(self._state_path, state)
        write_json(os.path.join(self.report_dir, "epochs.json"), self.history)
        if self.on_epoch:
            self.on_epoch(self.history)

    def _project_the_budget(self, record: Dict[str, float]):
        """Records in `record` how many epochs the budget holds, each costing what the last
        did, and stops before the next epoch if that one would not fit."""
        spent = sum(e["cpu_seconds"] for e in self.history) / 60
        next_epoch = self.history[-1]["cpu_seconds"] / 60
        # The workers of a cluster count their own CPU time; they must stop at the same
        # epoch (or the others would wait for the one that stopped forever) and follow the
        # same learning rate.
        spent, next_epoch = _mean_over_the_workers(self.model, (spent, next_epoch))
        room, left = self.cpu_budget_minutes - spent, self.params["epochs"] - len(self.history)
        more = 0 if room < next_epoch else \
            min(left, math.floor(room / next_epoch)) if next_epoch > 0 else left
        record["budget_epochs"] = len(self.history) + more
        if not more:
            self.model.stop_training = True
            self._budget_stop = (
                f"CPU budget: {spent:.1f} CPU-min spent of train.max_cpu_minutes = "
                f"{self.cpu_budget_minutes:g}, and an epoch takes about {next_epoch:.1f}")

    def epochs_in_budget(self, epoch: int) -> Optional[int]:
        """The epochs the CPU budget holds as projected when epoch `epoch` (0-based) begins:
        from the epochs before it (a resume included); None before the first has ended."""
        done = [e for e in self.history if e["epoch"] <= epoch and "budget_epochs" in e]
        return done[-1]["budget_epochs"] if done else None

    def on_train_end(self, logs=None):
        es = self.early_stopping
        last = self.history[-1]["epoch"] if self.history else 0
        if es.stopped_epoch:
            stopped = (f"early stopping: eval loss did not improve for {es.patience} "
                       f"epoch{'s' if es.patience != 1 else ''}")
        elif self._budget_stop:
            stopped = self._budget_stop
        elif last < self.params.get("epochs", last):
            stopped = "stopped by another callback"  # e.g. TerminateOnNaN
        else:
            stopped = f"reached train.epochs = {self.params.get('epochs', last)}"
        report = {"epochs_run": last, "stopped": stopped,
                  "exported_epoch": es.best_epoch + 1 if self.history else None,
                  "best_eval_loss": _plain(es.best) if self.history else None,
                  "cpu_seconds": sum(e["cpu_seconds"] for e in self.history),
                  "wall_seconds": sum(e["wall_seconds"] for e in self.history),
                  **self.extra, "epochs": self.history}
        write_json(os.path.join(self.report_dir, features.TRAINING_REPORT), report)
        if self.history:
            logger.info("training stopped after epoch %d (%s); exporting epoch %d "
                        "(eval loss %.4f nats/char)", last, stopped, es.best_epoch + 1, es.best)
        # The run is complete: a later run of the same training starts afresh.
        remove_tree(self.state_dir)


def remove_tree(path: str) -> None:
    """Removes `path` and everything under it, if it exists.

    In a cluster the chief removes the whole backup while each worker is still removing
    its own part of it, so files listed by one walk can be gone before it deletes them:
    that is not an error, and the walk is retried until the folder is gone.
    """
    for _ in range(10):
        try:
            if tf.io.gfile.exists(path):
                tf.io.gfile.rmtree(path)
            return
        except tf.errors.NotFoundError:
            continue
    if tf.io.gfile.exists(path):
        raise RuntimeError(f"could not remove {path}: files keep appearing in it; "
                           "is another training writing there?")


class WorkersMeet(tf_keras.callbacks.Callback):
    """At the end of training, waits until every worker of a cluster has got there.

    Keras' callbacks run unsynchronised after the last epoch's evaluation: without this,
    the chief's BackupAndRestore deletes the backup folder while a slower worker is still
    writing its last epoch's checkpoint into it (its temporary copy lives inside), and that
    worker fails. One all-reduce is the meeting point; alone, there is nothing to wait for.
    """

    def on_train_end(self, logs=None):
        strategy = self.model.distribute_strategy
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            strategy.reduce(tf.distribute.ReduceOp.SUM,
                            strategy.run(tf.function(lambda: tf.constant(1.0))), axis=None)


class EvaluateAverage(tf_keras.callbacks.Callback):
    """Evaluates the optimizer's moving average of the weights instead of the weights.

    Keras' optimizer keeps the average (`use_ema`) but puts it into the model only at the
    end of `fit`, so the epochs would be judged, and the best one kept, by weights other
    than those exported. This swaps the average in for each epoch's evaluation and keeps
    it there while the callbacks before it read the model (EarlyStopping's best weights,
    ModelCheckpoint); training continues from the weights themselves. Place it right
    before BackupAndRestore, whose checkpoint must hold the weights training resumes from.
    """

    def __init__(self):
        super().__init__()
        self._weights = None

    def on_test_begin(self, logs=None):
        self._weights = [v.numpy() for v in self.model.trainable_variables]
        self.model.optimizer.finalize_variable_values(self.model.trainable_variables)

    def on_epoch_end(self, epoch, logs=None):
        if self._weights is not None:
            for variable, value in zip(self.model.trainable_variables, self._weights):
                variable.assign(value)
            self._weights = None


def _mean_over_the_workers(model: tf_keras.Model, values):
    """Each of `values` averaged over the workers of a cluster (alone: `values`); the
    same result on every worker (collective all-reduce has sum and mean, no max)."""
    strategy = model.distribute_strategy
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return values
    mean = strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(
        tf.function(lambda: tf.constant(values, tf.float64))), axis=None)
    return tuple(float(v) for v in mean.numpy())


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def cooldown_factor(epoch: int, epochs: int, cooldown: int) -> float:
    """What the last `cooldown` of a run's `epochs` take off the schedule's rate: 1 before
    them, then (k+1)/(cooldown+1) with k epochs after this one, so 1/(cooldown+1) in the
    last. An epoch past the projected end (the projection shrank) is treated as the last."""
    left = max(epochs - epoch - 1, 0)
    return 1.0 if left >= cooldown else (left + 1) / (cooldown + 1)


def cosine_learning_rate(peak: float, epoch: int, epochs: int) -> float:
    """Half a cosine from `peak` to zero over `epochs`, taken at each epoch's midpoint.

    Per epoch rather than per step, so it needs no step count (the train split's size is
    unknown before the first pass); the midpoint stands for the epoch's mean of a
    per-step cosine.
    """
    return peak * 0.5 * (1 + math.cos(math.pi * (epoch + 0.5) / epochs))
