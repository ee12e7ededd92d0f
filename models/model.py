"""The character RNN: Embedding → GRU/LSTM × layers → Dense, its loss and its metric.

Reads like the tutorial's model. Its settings (`ModelSettings`) sit beside it in
models/settings.py; training it is models/trainer.py.
"""
import dataclasses
from typing import Any, Dict, List

import tensorflow as tf
import tf_keras

from models import features, recurrent
from models.settings import ModelSettings


def build_model(vocab_size: int, settings: ModelSettings, return_state: bool = False,
                keras_rnn: bool = False) -> tf_keras.Model:
    """Embedding → RNN layers → logits over the vocabulary, for ids [batch, time].

    Layer names (`embedding`, `rnn_0`…, `logits`) are relied on by the export.
    The RNN settings are the ones cuDNN accepts (tanh/sigmoid, reset_after, no
    recurrent dropout, no unrolling), so on a GPU Keras picks the fused kernel.
    `return_state`: the RNN layers also give their last states, for training with carried
    state (models/carry.py calls the same layers with them); this model's output is the same.
    The RNN layers are Keras', trained on a CPU with one matrix product a time step
    (models/recurrent.py); `keras_rnn`: Keras' own kernels, which bench.rnn_kernel compares.
    """
    layers = tf_keras.layers if keras_rnn else recurrent
    s = settings
    ids = tf_keras.Input(shape=(None,), dtype=tf.int64, name=features.IDS_KEY)
    x = tf_keras.layers.Embedding(vocab_size, s.embedding_dim, name="embedding")(ids)
    for i in range(s.rnn_layers):
        if s.cell == "gru":
            layer = layers.GRU(s.rnn_units, return_sequences=True, reset_after=True,
                               return_state=return_state, name=f"rnn_{i}")
        elif s.cell == "lstm":
            layer = layers.LSTM(s.rnn_units, return_sequences=True,
                                return_state=return_state, name=f"rnn_{i}")
        else:
            raise ValueError(f"cell = {s.cell!r}: must be 'gru' or 'lstm'")
        x = layer(x)[0] if return_state else layer(x)
        if s.dropout:
            x = tf_keras.layers.Dropout(s.dropout, name=f"dropout_{i}")(x)
    # float32 logits even under a mixed-precision policy: softmax and loss need the range.
    logits = tf_keras.layers.Dense(vocab_size, name="logits", dtype="float32")(x)
    return tf_keras.Model(ids, logits, name="char_rnn")


def shape_of(model: tf_keras.Model) -> Dict[str, Any]:
    """The settings that decide the weights' shapes (dropout has none), as a dict."""
    layers = rnn_layers_of(model)
    return {"embedding_dim": model.get_layer("embedding").output_dim,
            "rnn_units": layers[0].units, "rnn_layers": len(layers),
            "cell": "lstm" if isinstance(layers[0], tf_keras.layers.LSTM) else "gru"}


def settings_of(shape: Dict[str, Any]) -> ModelSettings:
    """ModelSettings from a shape_of() dict (dropout: none, it is training-only)."""
    return dataclasses.replace(ModelSettings(**shape), dropout=0.0)


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


def compile_model(model: tf_keras.Model, learning_rate: float, clipnorm: float = 0.0,
                  weight_decay: float = 0.0, ema_momentum: float = 0.0) -> tf_keras.Model:
    """Adam on the masked loss; `clipnorm` > 0 clips the global gradient norm;
    `weight_decay` > 0 makes it AdamW, decaying every weight but the biases;
    `ema_momentum` > 0 has the optimizer keep the weights' moving average
    (`models/callbacks.py` has it evaluated and exported)."""
    ema = {"use_ema": ema_momentum > 0, "ema_momentum": ema_momentum}
    if weight_decay:
        optimizer = tf_keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay,
                                              global_clipnorm=clipnorm or None, **ema)
        # A bias shifts an activation rather than scaling an input: shrinking it towards
        # zero regularises nothing.
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    else:
        optimizer = tf_keras.optimizers.Adam(learning_rate, global_clipnorm=clipnorm or None,
                                             **ema)
    model.compile(optimizer=optimizer, loss=MaskedCharLoss(), metrics=[CharPerplexity()])
    return model


def to_inputs_and_targets(ids: tf.Tensor):
    """ids [batch, time] (padded) → (ids[:, :-1], ids[:, 1:]): predict each next character."""
    return ids[:, :-1], ids[:, 1:]
