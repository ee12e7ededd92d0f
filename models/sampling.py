"""Choosing the next character from logits: temperature, top-k, top-p (nucleus), greedy.

All graph code, used inside the exported signatures; reserved ids are never chosen.
"""
import tensorflow as tf

from models import features

# Large enough to vanish under softmax, small enough to keep arithmetic finite.
_NEG = -1e9


def mask_reserved(logits: tf.Tensor) -> tf.Tensor:
    """Rules out [PAD] and [UNK] so that they are never generated."""
    vocab_size = tf.shape(logits)[-1]
    reserved = tf.range(vocab_size) < features.NUM_RESERVED_IDS
    return tf.where(reserved, tf.constant(_NEG, logits.dtype), logits)


def apply_top_k(logits: tf.Tensor, top_k: tf.Tensor) -> tf.Tensor:
    """Keeps the k largest logits per row; top_k <= 0 keeps all."""
    def keep_top_k():
        k = tf.minimum(top_k, tf.shape(logits)[-1])
        kth_largest = tf.math.top_k(logits, k=k, sorted=True).values[:, -1:]
        return tf.where(logits < kth_largest, tf.constant(_NEG, logits.dtype), logits)
    # A cond, not arithmetic that keeps all: the sort costs a lot per generated character.
    return tf.cond(top_k > 0, keep_top_k, lambda: logits)


def apply_top_p(logits: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Keeps the smallest set of most likely ids whose probability reaches top_p.

    The most likely id is always kept; top_p >= 1 keeps all.
    """
    def keep_nucleus():
        sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
        mass_before = tf.math.cumsum(tf.nn.softmax(sorted_logits), axis=-1, exclusive=True)
        kept = tf.where(mass_before < top_p, sorted_logits,
                        tf.constant(float("inf"), logits.dtype))
        threshold = tf.reduce_min(kept, axis=-1, keepdims=True)
        return tf.where(logits < threshold, tf.constant(_NEG, logits.dtype), logits)
    return tf.cond(top_p < 1.0, keep_nucleus, lambda: logits)


def sample(logits, temperature, top_k, top_p, seed_pair) -> tf.Tensor:
    """Draws one id per row (int64 [batch]); rows with temperature <= 0 take the argmax.

    Args:
      logits: float [batch, vocab].
      temperature: float32 [batch].
      top_k: int32 scalar, 0 = off.
      top_p: float32 scalar, 1.0 = off.
      seed_pair: int32 [2], for tf.random.stateless_categorical (reproducible draws).
    """
    logits = mask_reserved(tf.cast(logits, tf.float32))
    greedy = tf.argmax(logits, axis=-1)
    scaled = logits / tf.maximum(temperature, 1e-6)[:, tf.newaxis]
    scaled = apply_top_p(apply_top_k(scaled, top_k), top_p)
    sampled = tf.random.stateless_categorical(scaled, 1, seed=seed_pair, dtype=tf.int64)[:, 0]
    return tf.where(temperature > 0, sampled, greedy)


def resolve_seed(seed: tf.Tensor) -> tf.Tensor:
    """seed 0 means "random": draw one; any other value is used as given."""
    return tf.cond(
        tf.equal(seed, 0),
        lambda: tf.random.uniform([], 1, tf.int32.max, dtype=tf.int32),
        lambda: seed,
    )
