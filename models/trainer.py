"""The TFX Trainer: Transform output → batches → fit the char RNN → export the servable.

`run_fn` is TFX's entry point (wired by dotted path `models.trainer.run_fn`); `fit` is the
training itself, which the benchmarks call too. Keras' own callbacks do the work:
EarlyStopping(restore_best_weights) keeps the lowest-eval-loss epoch, ReduceLROnPlateau
cuts the learning rate on a plateau, BackupAndRestore resumes an interrupted run.
`TrainingRecord` adds what they lack: their counters and the best epoch's weights on
disk, so a run killed and resumed still exports the best epoch of the whole run.

Extension point: a lever that needs its own training step (truncated back-propagation
through carried state, a curriculum) overrides `train_step` in a `tf_keras.Model`
subclass, Keras' "customizing fit" way, and keeps every callback here.
"""
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from models import features, precision, warm_start
from models import model as char_model
from models.settings import ModelSettings, TrainSettings

logger = logging.getLogger(__name__)

# In the Trainer's model_run dir: whether training started from the latest blessed
# model and why (not); and the training's record (epochs, where and why it stopped,
# which epoch was exported, the precision). The run summary prints both.
WARM_START_REPORT = "warm_start.json"
TRAINING_REPORT = "training.json"


def input_fn(file_pattern: List[str], data_accessor, schema, batch_size: int, shuffle: bool,
             repeat: bool, seed: int) -> tf.data.Dataset:
    """Transformed examples → padded (inputs, targets) batches.

    Records may differ in length (lines mode, a file's last window): the sparse ids are
    densified with [PAD] = 0 to the longest record of each batch.
    """
    from tfx_bsl.public import tfxio
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed,
                                       num_epochs=None if repeat else 1),
        schema)

    def split(batch):
        ids = batch[features.IDS_KEY]
        if isinstance(ids, tf.SparseTensor):
            ids = tf.sparse.to_dense(ids, default_value=features.PAD_ID)
        elif isinstance(ids, tf.RaggedTensor):
            ids = ids.to_tensor(default_value=features.PAD_ID)
        return char_model.to_inputs_and_targets(ids)

    return dataset.map(split, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def distribution_strategy() -> tf.distribute.Strategy:
    """A cluster in TF_CONFIG (Vertex AI, TFX's cloud Trainer, a Kubernetes job): one
    replica per worker, MultiWorkerMirroredStrategy; several local GPUs:
    MirroredStrategy; otherwise the default strategy."""
    if _tf_config().get("cluster"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _tf_config() -> Dict[str, Any]:
    raw = os.environ.get("TF_CONFIG", "")
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise ValueError(f"TF_CONFIG is not valid JSON: {raw[:200]!r}; unset it or fix it "
                         "(see the tf.distribute multi-worker guide)") from None


def is_chief() -> bool:
    """Only one worker of a cluster writes the model; alone, we are it."""
    task = _tf_config().get("task") or {}
    cluster = _tf_config().get("cluster") or {}
    if task.get("type") == "chief":
        return True
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0 \
        and "chief" not in cluster


def own_dir(path: str) -> str:
    """`path` on the chief; a folder of its own inside it on any other worker.

    Every worker of a cluster gets the same model_run_dir, so what each one writes there
    (reports, its copy of the export) would otherwise be written by all at once.
    """
    return path if is_chief() else os.path.join(path, task_name())


def task_name() -> str:
    """This worker's name in the cluster (`worker-1`): what its own files are named by."""
    task = _tf_config()["task"]
    return f"{task['type']}-{task['index']}"


def backup_dir(fn_args) -> str:
    """Where an interrupted training's last completed epoch is kept, stable across re-runs.

    TFX gives every execution a new run directory, so the backup lives beside them,
    keyed by everything that determines the training: a re-run of the same training
    (after a kill -9, say) resumes from its last completed epoch instead of from scratch.
    """
    key = hashlib.sha256(json.dumps(
        [fn_args.custom_config, fn_args.transform_output, sorted(fn_args.train_files)],
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    trainer_dir = os.path.dirname(os.path.dirname(fn_args.model_run_dir.rstrip("/")))
    return os.path.join(trainer_dir, "backup", key)


def _write_json(path: str, value) -> None:
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
    """

    _EARLY_STOPPING = ("wait", "best", "best_epoch")
    _REDUCE_LR = ("wait", "best", "cooldown_counter")

    def __init__(self, state_dir: str, report_dir: str,
                 early_stopping: tf_keras.callbacks.EarlyStopping,
                 reduce_lr: Optional[tf_keras.callbacks.ReduceLROnPlateau] = None,
                 extra: Optional[Dict[str, Any]] = None, on_epoch=None):
        super().__init__()
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
        self.history = []
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
        es = self.early_stopping
        best = es.best_epoch == epoch
        logger.info("epoch %d: train loss %.4f, eval loss %s%s, %.1f CPU-min", epoch + 1,
                    logs.get("loss", float("nan")),
                    "%.4f nats/char" % logs["val_loss"] if "val_loss" in logs else "n/a",
                    " (best)" if best else "", record["cpu_seconds"] / 60)
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
        _write_json(self._state_path, state)
        _write_json(os.path.join(self.report_dir, "epochs.json"), self.history)
        if self.on_epoch:
            self.on_epoch(self.history)

    def on_train_end(self, logs=None):
        es = self.early_stopping
        last = self.history[-1]["epoch"] if self.history else 0
        if es.stopped_epoch:
            stopped = (f"early stopping: eval loss did not improve for {es.patience} "
                       f"epoch{'s' if es.patience != 1 else ''}")
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
        _write_json(os.path.join(self.report_dir, TRAINING_REPORT), report)
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


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def cosine_learning_rate(peak: float, epoch: int, epochs: int) -> float:
    """Half a cosine from `peak` to zero over `epochs`, taken at each epoch's midpoint.

    Per epoch rather than per step, so it needs no step count (the train split's size is
    unknown before the first pass); the midpoint stands for the epoch's mean of a
    per-step cosine.
    """
    return peak * 0.5 * (1 + math.cos(math.pi * (epoch + 0.5) / epochs))


def fit(model: tf_keras.Model, train_ds, eval_ds, train: TrainSettings, backup: str,
        report_dir: str, extra_callbacks=(), extra_report=None, on_epoch=None) -> Dict[str, Any]:
    """Trains `model` (compiled) with the project's callbacks; resumable at `backup`.

    Leaves the model holding the lowest-eval-loss epoch's weights; returns the record
    also written to `report_dir`/training.json. `on_epoch(history)` is called after each
    epoch's state is on disk.
    """
    early_stopping = tf_keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=train.patience or train.epochs, restore_best_weights=True)
    reduce_lr = tf_keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=train.lr_factor, patience=train.lr_patience,
        min_lr=train.learning_rate / 1000) \
        if train.lr_schedule == "plateau" and train.lr_factor < 1.0 else None
    # A function of the epoch alone, so a resumed run picks up the same curve.
    schedule = [tf_keras.callbacks.LearningRateScheduler(
        lambda epoch: cosine_learning_rate(train.learning_rate, epoch, train.epochs))] \
        if train.lr_schedule == "cosine" else []
    # Each worker of a cluster keeps its own copy (BackupAndRestore does the same).
    state_dir = os.path.join(backup, "best" if is_chief() else f"best-{task_name()}")
    record = TrainingRecord(state_dir, report_dir, early_stopping, reduce_lr, extra_report,
                            on_epoch)
    # In this order at the end: each worker's record removes its own state, the workers
    # meet, and only then does the chief's BackupAndRestore delete the backup.
    average = [EvaluateAverage()] if train.ema_momentum else []
    callbacks = [*extra_callbacks, *schedule, early_stopping,
                 *([reduce_lr] if reduce_lr else []), record, WorkersMeet(), *average,
                 tf_keras.callbacks.BackupAndRestore(os.path.join(backup, "last"))]
    model.fit(train_ds, epochs=train.epochs, steps_per_epoch=train.steps_per_epoch,
              validation_data=eval_ds, callbacks=callbacks,
              # At a terminal, Keras' live bar shows progress within an epoch; in a log, its
              # per-epoch line would repeat TrainingRecord's.
              verbose=1 if sys.stdout.isatty() else 0)
    # Finished: nothing to resume. BackupAndRestore empties its folder but leaves it; the
    # other workers are done with the backup (WorkersMeet).
    if is_chief():
        remove_tree(backup)
    with tf.io.gfile.GFile(os.path.join(report_dir, TRAINING_REPORT), "r") as f:
        return json.loads(f.read())


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (wired by dotted path `models.trainer.run_fn`).

    custom_config: {"model": ModelSettings, "train": TrainSettings, "mode": str,
    "serving_dir": str, "code_fingerprint": str} as plain dicts; the one source of the
    training's settings (the Trainer's TrainArgs/EvalArgs are left empty).
    """
    import tensorflow_transform as tft

    # First: MultiWorkerMirroredStrategy configures the collective ops, which it can only
    # do before anything (a tensor, a dataset, reading the vocabulary) has started
    # TensorFlow's runtime; otherwise every worker of a cluster fails here.
    strategy = distribution_strategy()
    # Imported after it: the export module makes tensors when imported (its signatures'
    # default values).
    from models import export

    config: Dict[str, Any] = fn_args.custom_config
    model_settings = ModelSettings(**config["model"])
    train = TrainSettings(**config["train"])
    tf_keras.utils.set_random_seed(train.seed)

    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    vocab = [token.decode("utf-8") for token in tft_output.vocabulary_by_name(features.VOCAB_NAME)]
    vocab_size = len(vocab) + features.NUM_RESERVED_IDS
    schema = tft_output.transformed_metadata.schema

    train_ds = input_fn(fn_args.train_files, fn_args.data_accessor, schema, train.batch_size,
                        shuffle=True, repeat=train.steps_per_epoch is not None, seed=train.seed)
    eval_ds = input_fn(fn_args.eval_files, fn_args.data_accessor, schema, train.batch_size,
                       shuffle=False, repeat=False, seed=train.seed)
    if train.eval_steps:
        eval_ds = eval_ds.take(train.eval_steps)

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Transform writes few files; sharding by record works whatever their number.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        train_ds, eval_ds = train_ds.with_options(options), eval_ds.with_options(options)
    policy, why = precision.choose(train.precision)
    logger.info("precision: %s (%s)", policy, why)
    tf_keras.mixed_precision.set_global_policy(policy)
    run_dir = fn_args.model_run_dir
    report_dir = own_dir(run_dir)
    tf.io.gfile.makedirs(report_dir)
    try:
        with strategy.scope():
            model = char_model.compile_model(char_model.build_model(vocab_size, model_settings),
                                             train.learning_rate, train.clipnorm,
                                             train.weight_decay, train.ema_momentum)
            started = warm_start.apply(model, vocab, char_model.shape_of(model), config["mode"],
                                       config["serving_dir"], enabled=train.warm_start)
        _write_json(os.path.join(report_dir, WARM_START_REPORT), started)
        logger.info("training: vocabulary %d characters (+%d reserved ids), %s",
                    len(vocab), features.NUM_RESERVED_IDS,
                    json.dumps(dataclasses.asdict(model_settings)))
        fit(model, train_ds, eval_ds, train, backup_dir(fn_args), report_dir,
            extra_callbacks=[
                tf_keras.callbacks.TensorBoard(log_dir=run_dir, update_freq="epoch"),
                tf_keras.callbacks.ModelCheckpoint(
                    os.path.join(run_dir, "checkpoints", "epoch-{epoch:03d}.weights.h5"),
                    save_weights_only=True)],
            extra_report={"precision": policy, "precision_reason": why})
        # Every worker of a cluster takes part in saving (collective ops); only the chief's
        # copy lands where the Pusher looks.
        export_dir = fn_args.serving_model_dir if is_chief() else os.path.join(
            report_dir, "export")
        export.save(model, vocab, mode=config["mode"], export_dir=export_dir)
    finally:
        # The policy is process-wide; other components may run in this process next.
        tf_keras.mixed_precision.set_global_policy("float32")
