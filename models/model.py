"""The character RNN (Embedding → GRU/LSTM × layers → Dense) and the Trainer's run_fn.

Reads like the tutorial's model; the TFX parts are `input_fn` (Transform output →
(inputs, targets) batches) and `run_fn` (train, then export the serving signatures).
"""
import hashlib
import json
import logging
import os
import sys
from typing import Any, Dict, List

import tensorflow as tf
import tf_keras

from models import features

logger = logging.getLogger(__name__)

# In the Trainer's model_run dir: whether training started from the latest blessed
# model, and why (not); the run summary prints it.
WARM_START_REPORT = "warm_start.json"


def build_model(vocab_size: int, embedding_dim: int = 256, rnn_units: int = 1024,
                rnn_layers: int = 1, cell: str = "gru", dropout: float = 0.0) -> tf_keras.Model:
    """Embedding → RNN layers → logits over the vocabulary, for ids [batch, time].

    Layer names (`embedding`, `rnn_0`…, `logits`) are relied on by the export.
    The RNN settings are the ones cuDNN accepts (tanh/sigmoid, reset_after, no
    recurrent dropout, no unrolling), so on a GPU Keras picks the fused kernel.
    """
    ids = tf_keras.Input(shape=(None,), dtype=tf.int64, name=features.IDS_KEY)
    x = tf_keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")(ids)
    for i in range(rnn_layers):
        if cell == "gru":
            layer = tf_keras.layers.GRU(rnn_units, return_sequences=True, reset_after=True,
                                        name=f"rnn_{i}")
        elif cell == "lstm":
            layer = tf_keras.layers.LSTM(rnn_units, return_sequences=True, name=f"rnn_{i}")
        else:
            raise ValueError(f"cell = {cell!r}: must be 'gru' or 'lstm'")
        x = layer(x)
        if dropout:
            x = tf_keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    # float32 logits even under a mixed-precision policy: softmax and loss need the range.
    logits = tf_keras.layers.Dense(vocab_size, name="logits", dtype="float32")(x)
    return tf_keras.Model(ids, logits, name="char_rnn")


def shape_of(model: tf_keras.Model) -> Dict[str, Any]:
    """The build_model arguments that decide the weights' shapes (dropout has none)."""
    layers = rnn_layers_of(model)
    return {"embedding_dim": model.get_layer("embedding").output_dim,
            "rnn_units": layers[0].units, "rnn_layers": len(layers),
            "cell": "lstm" if isinstance(layers[0], tf_keras.layers.LSTM) else "gru"}


def rnn_layers_of(model: tf_keras.Model) -> List[tf_keras.layers.Layer]:
    layers = []
    while True:
        try:
            layers.append(model.get_layer(f"rnn_{len(layers)}"))
        except ValueError:
            return layers


def masked_nll(targets: tf.Tensor, logits: tf.Tensor):
    """Per-character negative log-likelihood and a 0/1 mask of real (non-padding) targets."""
    mask = tf.cast(tf.not_equal(targets, features.PAD_ID), tf.float32)
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(targets, tf.int32), logits=tf.cast(logits, tf.float32))
    return nll * mask, mask


class MaskedCharLoss(tf_keras.losses.Loss):
    """Mean cross-entropy per real character: padding counts neither above nor below."""

    def __init__(self, name="masked_char_loss"):
        super().__init__(name=name, reduction=tf_keras.losses.Reduction.SUM_OVER_BATCH_SIZE)

    def call(self, y_true, y_pred):
        nll, mask = masked_nll(y_true, y_pred)
        return tf.reduce_sum(nll) / tf.maximum(tf.reduce_sum(mask), 1.0)


class CharPerplexity(tf_keras.metrics.Metric):
    """exp(total NLL / total characters), character-weighted, summed in float64."""

    def __init__(self, name="perplexity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total_nll = self.add_weight("total_nll", shape=(), dtype=tf.float64,
                                         initializer="zeros")
        self.total_chars = self.add_weight("total_chars", shape=(), dtype=tf.float64,
                                           initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        del sample_weight
        nll, mask = masked_nll(y_true, y_pred)
        self.total_nll.assign_add(tf.cast(tf.reduce_sum(nll), tf.float64))
        self.total_chars.assign_add(tf.cast(tf.reduce_sum(mask), tf.float64))

    def result(self):
        return tf.exp(self.total_nll / tf.maximum(self.total_chars, 1.0))


def compile_model(model: tf_keras.Model, learning_rate: float) -> tf_keras.Model:
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate), loss=MaskedCharLoss(),
                  metrics=[CharPerplexity()])
    return model


def to_inputs_and_targets(ids: tf.Tensor):
    """ids [batch, time] (padded) → (ids[:, :-1], ids[:, 1:]): predict each next character."""
    return ids[:, :-1], ids[:, 1:]


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
        return to_inputs_and_targets(ids)

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


class EpochReport(tf_keras.callbacks.Callback):
    """One log line per epoch with train and eval loss, whatever Keras' verbosity."""

    def __init__(self, report_path: str):
        super().__init__()
        self.report_path = report_path
        self.history: List[Dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.history.append({"epoch": epoch + 1, **logs})
        logger.info("epoch %d: train loss %.4f nats/char, eval loss %s", epoch + 1,
                    logs.get("loss", float("nan")),
                    "%.4f nats/char (perplexity %.3f)" % (logs["val_loss"], logs["val_perplexity"])
                    if "val_loss" in logs else "n/a")
        with tf.io.gfile.GFile(self.report_path, "w") as f:
            f.write(json.dumps(self.history, indent=1))


class KeepBestWeights(tf_keras.callbacks.Callback):
    """Restores, when training ends, the weights of the epoch with the lowest eval loss.

    Long runs overfit (the tutorial's 20 epochs memorise the text); the Evaluator should
    judge the best model the run saw, not its last state.
    """

    def __init__(self, monitor: str = "val_loss"):
        super().__init__()
        self.monitor = monitor
        self.best, self.best_epoch, self.best_weights = float("inf"), None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value < self.best:
            self.best, self.best_epoch = float(value), epoch + 1
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            logger.info("keeping the weights of epoch %d (lowest %s %.4f)", self.best_epoch,
                        self.monitor, self.best)


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


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (wired by dotted path `models.model.run_fn`).

    custom_config: {"model": ModelSettings, "train": TrainSettings, "mode": str,
    "serving_dir": str, "code_fingerprint": str} as plain dicts.
    """
    import tensorflow_transform as tft

    from models import export, warm_start

    config: Dict[str, Any] = fn_args.custom_config
    model_settings, train = config["model"], config["train"]
    tf_keras.utils.set_random_seed(train["seed"])

    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    vocab = [token.decode("utf-8") for token in tft_output.vocabulary_by_name(features.VOCAB_NAME)]
    vocab_size = len(vocab) + features.NUM_RESERVED_IDS
    schema = tft_output.transformed_metadata.schema
    steps_per_epoch = train["steps_per_epoch"]

    train_ds = input_fn(fn_args.train_files, fn_args.data_accessor, schema, train["batch_size"],
                        shuffle=True, repeat=steps_per_epoch is not None, seed=train["seed"])
    eval_ds = input_fn(fn_args.eval_files, fn_args.data_accessor, schema, train["batch_size"],
                       shuffle=False, repeat=False, seed=train["seed"])
    if train["eval_steps"]:
        eval_ds = eval_ds.take(train["eval_steps"])

    strategy = distribution_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Transform writes few files; sharding by record works whatever their number.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        train_ds, eval_ds = train_ds.with_options(options), eval_ds.with_options(options)
    tf_keras.mixed_precision.set_global_policy(train.get("precision", "float32"))
    with strategy.scope():
        model = compile_model(build_model(vocab_size, **model_settings), train["learning_rate"])
        started = warm_start.apply(
            model, vocab, shape_of(model), config["mode"], config.get("serving_dir"),
            enabled=train.get("warm_start", True), build_model=build_model)

    run_dir = fn_args.model_run_dir
    with tf.io.gfile.GFile(os.path.join(run_dir, WARM_START_REPORT), "w") as f:
        f.write(json.dumps(started, indent=1))
    report = EpochReport(os.path.join(run_dir, "epochs.json"))
    callbacks = [
        tf_keras.callbacks.TensorBoard(log_dir=run_dir, update_freq="epoch"),
        tf_keras.callbacks.ModelCheckpoint(
            os.path.join(run_dir, "checkpoints", "epoch-{epoch:03d}.weights.h5"),
            save_weights_only=True),
        report,
        tf_keras.callbacks.BackupAndRestore(backup_dir(fn_args)),
    ]
    if train.get("keep_best", True):
        callbacks.append(KeepBestWeights())
    logger.info("training: vocabulary %d characters (+%d reserved ids), %s",
                len(vocab), features.NUM_RESERVED_IDS, json.dumps(model_settings))
    try:
        model.fit(train_ds, epochs=train["epochs"], steps_per_epoch=steps_per_epoch,
                  validation_data=eval_ds, callbacks=callbacks,
                  verbose=1 if sys.stdout.isatty() else 2)
        # Every worker of a cluster takes part in saving (collective ops); only the chief's
        # copy lands where the Pusher looks.
        export_dir = fn_args.serving_model_dir if is_chief() else os.path.join(
            run_dir, f"worker-{_tf_config().get('task', {}).get('index', 0)}-export")
        export.save(model, vocab, mode=config["mode"], export_dir=export_dir)
    finally:
        # The policy is process-wide; other components may run in this process next.
        tf_keras.mixed_precision.set_global_policy("float32")
