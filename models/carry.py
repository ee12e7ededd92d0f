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
from typing import List, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from models import features
from models import model as char_model

logger = logging.getLogger(__name__)

# Records per batch while reading the train split into memory.
_READ_BATCH = 4096


def in_corpus_order(flat_ids: np.ndarray, lengths: np.ndarray,
                    positions: np.ndarray) -> np.ndarray:
    """The records' ids joined in corpus order.

    `flat_ids` holds the records one after another, `lengths` each one's length and
    `positions` each one's (span, file, record index) as the ExampleGen cut it. A file's
    records are consecutive windows of its text, so joined in order they are that text.
    """
    order = np.lexsort(positions.T[::-1])  # by span, then file, then record
    lengths, starts = lengths[order], (np.cumsum(lengths) - lengths)[order]
    out_starts = np.cumsum(lengths) - lengths
    # Output character i of record r reads flat_ids[starts[r] + (i - out_starts[r])].
    index = np.arange(lengths.sum()) + np.repeat(starts - out_starts, lengths)
    return flat_ids[index]


def read_in_corpus_order(file_pattern: List[str], data_accessor, schema) -> Tuple[np.ndarray,
                                                                               int]:
    """The train split's Transform output → (its ids in corpus order, seq_length).

    Held in memory as int32: 4 bytes a character of the split. seq_length is the longest
    record's length less one (stream mode's records hold seq_length + 1 characters; only
    a file's last one may be shorter).
    """
    from tfx_bsl.public import tfxio
    if features.POSITION_KEY not in {f.name for f in schema.feature}:
        raise ValueError(
            f"train.carry_state: the transformed examples have no '{features.POSITION_KEY}' "
            "feature, so their order in the corpus is unknown; they were cut before the "
            "ExampleGen recorded it: run the pipeline again so that the ExampleGen and "
            "Transform cut them anew, or turn carry_state off")
    dataset = data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=_READ_BATCH, shuffle=False,
                                                     num_epochs=1), schema)
    flat, lengths, positions = [], [], []
    for batch in dataset:
        ids = batch[features.IDS_KEY]
        if isinstance(ids, tf.SparseTensor):
            ids = tf.RaggedTensor.from_sparse(ids)
        position = batch[features.POSITION_KEY]
        if isinstance(position, tf.SparseTensor):
            position = tf.sparse.to_dense(position)
        flat.append(ids.flat_values.numpy().astype(np.int32))
        lengths.append(ids.row_lengths().numpy())
        positions.append(tf.reshape(position, [-1, 3]).numpy())
    if not lengths:
        raise ValueError(f"train.carry_state: no train records in {file_pattern}")
    lengths = np.concatenate(lengths)
    text = in_corpus_order(np.concatenate(flat), lengths, np.concatenate(positions))
    return text, int(lengths.max()) - 1


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

    def __init__(self, core: tf_keras.Model, batch_size: int):
        super().__init__(name="carried_state")
        self.core = core
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
                "batch_size": int(self.carried[0].shape[0])}

    @classmethod
    def from_config(cls, config):
        return cls(tf_keras.saving.deserialize_keras_object(config["core"]),
                   config["batch_size"])

    def call(self, ids, training=None):
        # From a zero state, as the Evaluator reads each record.
        return self.core(ids, training=training)

    def reset_states(self):
        super().reset_states()
        for variable in self.carried:
            variable.assign(tf.zeros_like(variable))

    def train_step(self, data):
        inputs, targets = data
        with tf.GradientTape() as tape:
            first = [tf.cast(v, s.dtype) for v, s in zip(self.carried, self.stepper.inputs[1:])]
            logits, *last = self.stepper([inputs, *first], training=True)
            loss = self.compute_loss(inputs, targets, logits)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        # The next step reads these as a non-trainable variable's value, which the tape
        # does not watch: no gradient flows back into this step.
        for variable, state in zip(self.carried, last):
            variable.assign(tf.cast(state, variable.dtype))
        return self.compute_metrics(inputs, targets, logits, sample_weight=None)


class ResetState(tf_keras.callbacks.Callback):
    """Zeroes the carried state as each epoch starts, where the streams start again."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.reset_states()
