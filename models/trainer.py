"""The TFX Trainer: Transform output → batches → fit the char RNN → export the servable.

`run_fn` is TFX's entry point (wired by dotted path `models.trainer.run_fn`); `fit` is the
training itself, which the benchmarks call too. Keras' own callbacks do the work:
EarlyStopping(restore_best_weights) keeps the lowest-eval-loss epoch, ReduceLROnPlateau
cuts the learning rate on a plateau, BackupAndRestore resumes an interrupted run, the
optimizer keeps the weights' moving average. `models/callbacks.py` adds what they lack
(the best epoch on disk across a kill, the average evaluated); `fit` puts them in order.

A lever that needs its own training step overrides `train_step` in a `tf_keras.Model`
subclass, Keras' "customizing fit" way, and keeps every callback here: truncated
back-propagation through carried state (`train.carry_state`, models/carry.py) and the
recurrent weights' DropConnect (`model.weight_drop`, models/weight_drop.py) do. One that
needs its own input reads the text from models/corpus_text.py (`train.shift_windows`).
"""
import dataclasses
import hashlib
import json
import logging
import os
import sys
from typing import Any, Dict, List

import tensorflow as tf
import tf_keras

from models import callbacks, carry, corpus_text, features, precision, warm_start, weight_drop
from models import model as char_model
from models import settings
from models.settings import ModelSettings, TrainSettings

logger = logging.getLogger(__name__)


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
    # Each worker of a cluster keeps its own copy (BackupAndRestore does the same).
    state_dir = os.path.join(backup, "best" if is_chief() else f"best-{task_name()}")
    record = callbacks.TrainingRecord(state_dir, report_dir, early_stopping, reduce_lr,
                                      extra_report, on_epoch, train.max_cpu_minutes)

    # A function of the epoch and the history on disk, so a resumed run picks up its curve.
    def decay_epochs(epoch: int) -> int:
        in_budget = record.epochs_in_budget(epoch) \
            if train.lr_schedule == "cosine_budget" else None
        return in_budget or train.epochs

    def rate(epoch: int) -> float:
        run_epochs = min(record.epochs_in_budget(epoch) or train.epochs, train.epochs)
        return callbacks.cosine_learning_rate(train.learning_rate, epoch,
                                              decay_epochs(epoch)) \
            * callbacks.cooldown_factor(epoch, run_epochs, train.cooldown_epochs)

    schedule = [tf_keras.callbacks.LearningRateScheduler(rate)] \
        if train.lr_schedule in ("cosine", "cosine_budget") else []
    # In this order at the end: each worker's record removes its own state, the workers
    # meet, and only then does the chief's BackupAndRestore delete the backup. After each
    # epoch, every callback before EvaluateAverage sees the evaluated (averaged) weights.
    average = [callbacks.EvaluateAverage()] if train.ema_momentum else []
    reset = [carry.ResetState()] if train.carry_state else []
    in_order = [*extra_callbacks, *reset, *schedule, early_stopping,
                *([reduce_lr] if reduce_lr else []), record, callbacks.WorkersMeet(), *average,
                tf_keras.callbacks.BackupAndRestore(os.path.join(backup, "last"))]
    model.fit(train_ds, epochs=train.epochs, steps_per_epoch=train.steps_per_epoch,
              validation_data=eval_ds, callbacks=in_order,
              # At a terminal, Keras' live bar shows progress within an epoch; in a log, its
              # per-epoch line would repeat TrainingRecord's.
              verbose=1 if sys.stdout.isatty() else 0)
    # Finished: nothing to resume. BackupAndRestore empties its folder but leaves it; the
    # other workers are done with the backup (WorkersMeet).
    if is_chief():
        callbacks.remove_tree(backup)
    with tf.io.gfile.GFile(os.path.join(report_dir, features.TRAINING_REPORT), "r") as f:
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

    repeat = train.steps_per_epoch is not None
    source = settings.train_input(train, config["mode"])
    if model_settings.weight_drop:
        weight_drop.check_strategy(strategy)
    if source == settings.CARRIED_STATE:
        carry.check_strategy(strategy)
        text, seq_length = corpus_text.read_in_corpus_order(
            fn_args.train_files, fn_args.data_accessor, schema, "train.carry_state")
        train_ds = carry.stream_dataset(text, train.batch_size, seq_length, repeat)
    elif source == settings.SHIFTED_WINDOWS:
        text, seq_length = corpus_text.read_in_corpus_order(
            fn_args.train_files, fn_args.data_accessor, schema, "train.shift_windows")
        train_ds = corpus_text.shifted_windows(text, train.batch_size, seq_length, train.seed,
                                               repeat)
    else:
        train_ds = input_fn(fn_args.train_files, fn_args.data_accessor, schema,
                            train.batch_size, shuffle=True, repeat=repeat, seed=train.seed)
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
            model = char_model.build_model(vocab_size, model_settings,
                                           return_state=train.carry_state)
            # With carried state or weight drop, a wrapper trains `model`'s layers with its
            # own training step; `model` is exported.
            if train.carry_state:
                trained = carry.CarriedState(model, train.batch_size, model_settings.weight_drop)
            elif model_settings.weight_drop:
                trained = weight_drop.WeightDropped(model, model_settings.weight_drop)
            else:
                trained = model
            char_model.compile_model(trained, train.learning_rate, train.clipnorm,
                                     train.weight_decay, train.ema_momentum)
            started = warm_start.apply(model, vocab, char_model.shape_of(model), config["mode"],
                                       config["serving_dir"], enabled=train.warm_start)
        callbacks.write_json(os.path.join(report_dir, features.WARM_START_REPORT), started)
        logger.info("training: vocabulary %d characters (+%d reserved ids), %s",
                    len(vocab), features.NUM_RESERVED_IDS,
                    json.dumps(dataclasses.asdict(model_settings)))
        fit(trained, train_ds, eval_ds, train, backup_dir(fn_args), report_dir,
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
