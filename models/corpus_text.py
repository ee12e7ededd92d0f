"""The train split as one text in corpus order, for trainings that cut it themselves.

Beam shuffles the records as it writes them, and the usual input (models/trainer.py's
input_fn) reads the ExampleGen's windows as they were cut, in a shuffled order. Two
trainings need the text itself: truncated back-propagation through carried state
(`train.carry_state`, models/carry.py) reads it as contiguous streams, and shifted windows
(`train.shift_windows`, here) cut it anew each epoch. Both read it into memory by the
records' positions (features.POSITION_KEY).
"""
from typing import List, Tuple

import numpy as np
import tensorflow as tf

from models import features
from models import model as char_model

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


def read_in_corpus_order(file_pattern: List[str], data_accessor, schema,
                         setting: str) -> Tuple[np.ndarray, int]:
    """The train split's Transform output → (its ids in corpus order, seq_length).

    Held in memory as int32: 4 bytes a character of the split. seq_length is the longest
    record's length less one (stream mode's records hold seq_length + 1 characters; only
    a file's last one may be shorter). `setting` is what needs it, for the messages.
    """
    from tfx_bsl.public import tfxio
    if features.POSITION_KEY not in {f.name for f in schema.feature}:
        raise ValueError(
            f"{setting}: the transformed examples have no '{features.POSITION_KEY}' "
            "feature, so their order in the corpus is unknown; they were cut before the "
            "ExampleGen recorded it: run the pipeline again so that the ExampleGen and "
            f"Transform cut them anew, or turn {setting} off")
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
        raise ValueError(f"{setting}: no train records in {file_pattern}")
    lengths = np.concatenate(lengths)
    text = in_corpus_order(np.concatenate(flat), lengths, np.concatenate(positions))
    return text, int(lengths.max()) - 1


def shifted_windows(text: np.ndarray, batch_size: int, seq_length: int, seed: int,
                    repeat: bool) -> tf.data.Dataset:
    """(inputs, targets) batches of windows of seq_length + 1 characters, cut from `text` at
    a new random offset each time the dataset is iterated (each epoch), shuffled.

    Each window starts where the one before it ended, as the ExampleGen's do, so an epoch
    reads every character but those before the offset and after the last whole window. The
    ExampleGen's fixed windows always read a character at the same distance from its
    window's zero state; here that distance changes from epoch to epoch. `repeat` for a
    fixed number of steps an epoch (train.steps_per_epoch).
    """
    # As many windows as fit from any offset in [0, seq_length): the same steps each epoch.
    count = len(text) // seq_length - 1
    if count < 1:
        raise ValueError(
            f"train.shift_windows: the train split holds {len(text)} characters, too few for "
            f"two windows of seq_length = {seq_length}; add text or lower --seq-length")
    ids = tf.constant(text, dtype=tf.int32)

    def starts(random):
        offset = random % seq_length
        return tf.data.Dataset.from_tensor_slices(
            offset + tf.range(count, dtype=tf.int64) * seq_length)

    dataset = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    dataset = dataset.flat_map(starts).shuffle(count, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(lambda start: ids[start:start + seq_length + 1]).batch(batch_size)
    dataset = dataset.map(lambda batch: char_model.to_inputs_and_targets(
        tf.cast(batch, tf.int64)), num_parallel_calls=tf.data.AUTOTUNE)
    return (dataset.repeat() if repeat else dataset).prefetch(tf.data.AUTOTUNE)
