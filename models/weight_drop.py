"""DropConnect on the recurrent weights (`model.weight_drop`): AWD-LSTM's regulariser.

Each training step multiplies every RNN layer's hidden-to-hidden matrix by one fresh
Bernoulli mask (kept entries scaled by 1 / (1 - rate)), the same mask at every time step
of every sequence in the batch. Recurrent dropout on the state draws a mask for each step
and takes Keras off its fused kernels (3.7x the CPU, bench/NOTES.md); this costs a few
copies of the matrices a step, and the layers run as they always do.

The dropped matrix goes into the variable for the step's forward and backward pass, and the
whole matrix back before the optimizer updates it. The gradient taken is the one with
respect to the dropped matrix, W ⊙ m; with respect to W it is that times m (the chain
rule), so dropped entries get none. Evaluation, export and generation use the whole
matrix, as inverted dropout intends. Keras' "customizing fit" route (a `train_step`
override), so every callback of models/trainer.py applies unchanged.
"""
from typing import Callable, List, Sequence, Tuple

import tensorflow as tf
import tf_keras

from models import model as char_model


def check_strategy(strategy: tf.distribute.Strategy) -> None:
    """One replica only: the step writes the dropped matrix into the variable, which a
    replica may not do to a variable the strategy mirrors on others."""
    if strategy.num_replicas_in_sync > 1:
        raise ValueError(
            f"model.weight_drop (--weight-drop) trains on one replica; this Trainer has "
            f"{strategy.num_replicas_in_sync} ({type(strategy).__name__}: TF_CONFIG's "
            "cluster or several GPUs): set it to 0 (`--weight-drop 0`; the quality preset sets "
            "it), or train on one worker with one device (CUDA_VISIBLE_DEVICES=0)")


def recurrent_kernels(model: tf_keras.Model) -> List[tf.Variable]:
    return [layer.cell.recurrent_kernel for layer in char_model.rnn_layers_of(model)]


def draw_mask(shape, rate: float, dtype) -> tf.Tensor:
    """Each entry kept with probability 1 - rate, and scaled by 1 / (1 - rate)."""
    keep = tf.cast(tf.random.uniform(shape) >= rate, dtype)
    return keep / (1.0 - rate)


def gradients_with_dropped(kernels: Sequence[tf.Variable], rate: float,
                           variables: Sequence[tf.Variable], optimizer,
                           forward: Callable[[], tuple]) -> Tuple[tuple, list]:
    """(forward's result, gradients of its loss for `variables`) with `kernels` dropped.

    `forward()` returns (loss, anything...): run inside a tape while each kernel holds its
    masked value; the kernels hold their whole values again when this returns. Rate 0:
    a plain step.
    """
    whole, masks = [], []
    for kernel in (kernels if rate else ()):
        value = tf.identity(kernel.read_value())
        mask = draw_mask(tf.shape(value), rate, value.dtype)
        kernel.assign(value * mask)
        whole.append(value)
        masks.append(mask)
    with tf.GradientTape() as tape:
        result = forward()
    # compute_gradients, not tape.gradient: a loss-scaling optimizer scales and unscales.
    pairs = optimizer.compute_gradients(result[0], list(variables), tape=tape)
    for kernel, value in zip(kernels, whole):
        kernel.assign(value)
    by_kernel = {id(kernel): mask for kernel, mask in zip(kernels, masks)}
    # The same objects (a mixed-precision policy's wrappers included), or a dropped entry
    # would be updated with a gradient it did not take part in.
    if not by_kernel.keys() <= {id(v) for v in variables}:
        raise ValueError("weight drop: a recurrent matrix is not among the trained variables")
    grads = [g * by_kernel[id(v)] if id(v) in by_kernel and g is not None else g
             for g, v in pairs]
    return result, grads


class WeightDropped(tf_keras.Model):
    """Trains `core` with DropConnect at `rate` on its recurrent matrices; evaluates and
    predicts as `core` does (the whole matrices). `core` is what gets exported."""

    def __init__(self, core: tf_keras.Model, rate: float):
        super().__init__(name="weight_dropped")
        if not 0 < rate < 1:
            raise ValueError(f"model.weight_drop = {rate}: must be in (0, 1)")
        self.core, self.rate = core, rate

    def get_config(self):
        return {"core": tf_keras.saving.serialize_keras_object(self.core), "rate": self.rate}

    @classmethod
    def from_config(cls, config):
        return cls(tf_keras.saving.deserialize_keras_object(config["core"]), config["rate"])

    def call(self, ids, training=None):
        return self.core(ids, training=training)

    def train_step(self, data):
        inputs, targets = data

        def forward():
            logits = self.core(inputs, training=True)
            return self.compute_loss(inputs, targets, logits), logits

        (_, logits), grads = gradients_with_dropped(
            recurrent_kernels(self.core), self.rate, self.trainable_variables,
            self.optimizer, forward)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self.compute_metrics(inputs, targets, logits, sample_weight=None)
