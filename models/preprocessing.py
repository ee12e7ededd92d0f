"""tf.Transform preprocessing: text → Unicode characters → ids over a corpus vocabulary."""
from typing import Any, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft

from models import features


def to_text_vector(text) -> tf.Tensor:
    """The `text` feature as a string vector [batch], whatever shape the schema gave it."""
    if isinstance(text, tf.SparseTensor):
        text = tf.sparse.to_dense(text, default_value="")
    return tf.reshape(text, [-1])


def split_chars(text: tf.Tensor) -> tf.RaggedTensor:
    """Splits UTF-8 strings [batch] into Unicode characters, ragged [batch, (chars)]."""
    # "REPLACE" so that one bad byte cannot fail a whole Beam bundle; the ExampleGen
    # already refuses non-UTF-8 input unless the user asked for replacement.
    return tf.strings.unicode_split(text, "UTF-8", errors="replace")


def ids_from_vocab_ids(vocab_ids):
    """Shifts tf.Transform's ids (-1 for unknown) into the model's id layout."""
    return tf.where(
        vocab_ids < 0,
        tf.cast(features.UNK_ID, vocab_ids.dtype),
        vocab_ids + features.NUM_RESERVED_IDS,
    )


def preprocessing_fn(inputs: Dict[str, Any], custom_config: Optional[Dict[str, Any]] = None):
    """Builds the character vocabulary over the corpus and maps each record to ids.

    `custom_config` carries the code fingerprint (it only serves to invalidate TFX's cache).
    """
    del custom_config
    chars = split_chars(to_text_vector(inputs[features.TEXT_KEY]))
    vocab = tft.vocabulary(
        chars,
        vocab_filename=features.VOCAB_NAME,
        file_format="tfrecord_gzip",
        store_frequency=False,
    )
    vocab_ids = tft.apply_vocabulary(chars, vocab, default_value=-1, file_format="tfrecord_gzip")
    ids = tf.ragged.map_flat_values(ids_from_vocab_ids, vocab_ids)
    outputs = {features.IDS_KEY: ids.to_sparse()}
    # Where each record was cut, for carried state and shifted windows (models/corpus_text.py).
    # Examples made without it (a schema of `text` alone) train as before.
    if features.POSITION_KEY in inputs:
        outputs[features.POSITION_KEY] = inputs[features.POSITION_KEY]
    return outputs
