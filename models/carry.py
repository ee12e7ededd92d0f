"""Truncated back-propagation through carried state (`train.carry_state`).

The train split becomes `batch_size` contiguous streams of the corpus: row k of each batch
goes on where row k of the batch before stopped, so the RNN's last state after one batch is
the right first state for the next. That state waits between steps in non-trainable
variables, one per state of each layer; the gradient stops at it, so each step still
back-propagates through its own seq_length characters only. `ResetState` zeroes it as each
epoch starts, where the streams start again.

Only the training step differs, by Keras' "customizing fit" route (a `train_step`
override), so every callback of models/trainer.py applies unchanged. Evaluation reads each
record from a zero state, as the Evaluator does, so the numbers compare with a training
without carried state. The model exported is the plain one inside (`CarriedState.core`):
the carried state never reaches the export.
"""
import logging

import numpy as np
import tensorflow as tf
import tf_keras

from models import features, weight_drop
from models import model as char_model

logger = logging.getLogger(__name__)

def stream_batches(text: np.ndarray, batch_size: int, seq_length: int) -> np.ndarray:
    """[steps, batch_size, seq_length + 1]: `text` as batch_size streams, one a row.

    Stream k is the k-th of batch_size equal parts of the text (the remainder left out).
    Row k of step j holds stream k's characters j·seq_length … (j+1)·seq_length: the next
    step's row starts at this one's last character, which is its last target and the next
    one's first input. So every character is read once, right after the one before it.
    """
    per_stream = len(text) // batch_size
    steps = (per_stream - 1) // seq_length
    if steps < 1:
        raise ValueError(
            f"train.carry_state: the train split holds {len(text)} characters, too few for "
            f"train.batch_size = {batch_size} streams of seq_length + 1 = {seq_length + 1}; "
            "lower --batch-size or --seq-length, or add text")
    streams = text[:per_stream * batch_size].reshape(batch_size, per_stream)
    windows = np.arange(steps)[:, None] * seq_length + np.arange(seq_length + 1)
    return streams[:, windows].transpose(1, 0, 2)


def stream_dataset(text: np.ndarray, batch_size: int, seq_length: int,
                   repeat: bool) -> tf.data.Dataset:
    """(inputs, targets) batches of stream_batches, in order: shuffling would break the
    streams. `repeat` for a fixed number of steps an epoch (train.steps_per_epoch)."""
    batches = stream_batches(text, batch_size, seq_length)
    logger.info("carried state: %d train characters as %d streams, %d steps of %d characters "
                "an epoch", len(text), batch_size, len(batches), seq_length)
    dataset = tf.data.Dataset.from_tensor_slices(batches)
    dataset = dataset.map(lambda ids: char_model.to_inputs_and_targets(tf.cast(ids, tf.int64)))
    return (dataset.repeat() if repeat else dataset).prefetch(tf.data.AUTOTUNE)


def check_strategy(strategy: tf.distribute.Strategy) -> None:
    """One replica only: the streams are rows of one batch, and a replica's state would
    have to follow the same rows from step to step, which the strategies' splitting of a
    batch among replicas does not promise."""
    if strategy.num_replicas_in_sync > 1:
        raise ValueError(
            f"train.carry_state (--carry-state) trains on one replica; this Trainer has "
            f"{strategy.num_replicas_in_sync} ({type(strategy).__name__}: TF_CONFIG's "
            "cluster or several GPUs): turn carry_state off, or train on one worker with one "
            "device (CUDA_VISIBLE_DEVICES=0)")


class CarriedState(tf_keras.Model):
    """Trains `core` (built with return_state=True) with its RNN's state carried from
    each batch of `batch_size` rows to the next; evaluates and predicts as `core` does."""

    def __init__(self, core: tf_keras.Model, batch_size: int, weight_drop: float = 0.0):
        super().__init__(name="carried_state")
        self.core, self.weight_drop = core, weight_drop
        ids = tf_keras.Input(shape=(None,), dtype=tf.int64, name=features.IDS_KEY)
        x, initial, final, self.carried = ids, [], [], []
        # The same layers in the same order as `core`, the RNN layers given their first
        # states: the weights are shared.
        for layer in core.layers:
            if isinstance(layer, tf_keras.layers.InputLayer):
                continue
            if isinstance(layer, tf_keras.layers.RNN):
                if not layer.return_state:
                    raise ValueError(f"carried state: layer {layer.name} does not return its "
                                     "state; build the model with return_state=True")
                states = []
                for j, size in enumerate(tf.nest.flatten(layer.cell.state_size)):
                    name = f"{layer.name}_state_{j}"
                    # A layer's state inputs are not cast to its policy as its inputs are.
                    states.append(tf_keras.Input(shape=(size,), dtype=layer.compute_dtype,
                                                 name=name))
                    # float32 under any policy: the state is kept here, not computed in.
                    self.carried.append(tf.Variable(tf.zeros([batch_size, size]),
                                                    trainable=False, name=name))
                x, *last = layer(x, initial_state=states if len(states) > 1 else states[0])
                initial += states
                final += last
            else:
                x = layer(x)
        self.stepper = tf_keras.Model([ids, *initial], [x, *final], name="stepper")

    def get_config(self):
        # What TensorBoard shows of the model: the network and the number of streams.
        return {"core": tf_keras.saving.serialize_keras_object(self.core),
                "batch_size": int(self.carried[0].shape[0]), "weight_drop": self.weight_drop}

    @classmethod
    def from_config(cls, config):
        return cls(tf_keras.saving.deserialize_keras_object(config["core"]),
                   config["batch_size"], config["weight_drop"])

    def call(self, ids, training=None):
        # From a zero state, as the Evaluator reads each record.
        return self.core(ids, training=training)

    def reset_states(self):
        super().reset_states()
        for variable in self.carried:
            variable.assign(tf.zeros_like(variable))

    def train_step(self, data):
        inputs, targets = data

        def forward():
            first = [tf.cast(v, s.dtype) for v, s in zip(self.carried, self.stepper.inputs[1:])]
            logits, *last = self.stepper([inputs, *first], training=True)
            return self.compute_loss(inputs, targets, logits), logits, last

        # With model.weight_drop, each recurrent matrix dropped for the step (rate 0: none).
        (_, logits, last), grads = weight_drop.gradients_with_dropped(
            weight_drop.recurrent_kernels(self.core), self.weight_drop,
            self.trainable_variables, self.optimizer, forward)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        # The next step reads these as a non-trainable variable's value, which the tape
        # does not watch: no gradient flows back into this step.
        for variable, state in zip(self.carried, last):
            variable.assign(tf.cast(state, variable.dtype))
        return self.compute_metrics(inputs, targets, logits, sample_weight=None)


class ResetState(tf_keras.callbacks.Callback):
    """Zeroes the carried state as each epoch starts, where the streams start again."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.reset_states()
