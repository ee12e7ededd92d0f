"""Choosing the next character from logits: temperature, top-k, top-p (nucleus), greedy.

All graph code, used inside the exported signatures; reserved ids are never chosen.
Every parameter is per row, and so is the randomness: a row's draw depends only on its
own seed and step (a counter-based hash, below), never on the other rows of the batch,
so a seeded request gives the same text alone or merged with others by a batching server.
`tf.random.stateless_categorical` cannot do that: it takes one seed for the whole batch.
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
    """Keeps each row's k largest logits (top_k int32 [batch]); k <= 0 keeps all."""
    def keep_top_k():
        vocab_size = tf.shape(logits)[-1]
        k = tf.where(top_k > 0, tf.minimum(top_k, vocab_size), vocab_size)
        descending = tf.sort(logits, axis=-1, direction="DESCENDING")
        kth_largest = tf.gather(descending, k - 1, batch_dims=1)[:, tf.newaxis]
        return tf.where(logits < kth_largest, tf.constant(_NEG, logits.dtype), logits)
    # A cond, not arithmetic that keeps all: the sort costs a lot per generated character.
    return tf.cond(tf.reduce_any(top_k > 0), keep_top_k, lambda: logits)


def apply_top_p(logits: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Keeps per row the smallest set of most likely ids whose probability reaches top_p
    (float32 [batch]); the most likely id is always kept; top_p >= 1 keeps all."""
    def keep_nucleus():
        sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
        mass_before = tf.math.cumsum(tf.nn.softmax(sorted_logits), axis=-1, exclusive=True)
        kept = tf.where(mass_before < top_p[:, tf.newaxis], sorted_logits,
                        tf.constant(float("inf"), logits.dtype))
        threshold = tf.reduce_min(kept, axis=-1, keepdims=True)
        nucleus = tf.where(logits < threshold, tf.constant(_NEG, logits.dtype), logits)
        # Rows with top_p 1 stay exact (a cumulative sum may round to 1 before the tail).
        return tf.where((top_p < 1.0)[:, tf.newaxis], nucleus, logits)
    return tf.cond(tf.reduce_any(top_p < 1.0), keep_nucleus, lambda: logits)


def _mix(x: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finalizer: every input bit flips each output bit about half
    the time, so consecutive seeds and steps give unrelated numbers."""
    def xorshift(v, bits):
        return tf.bitwise.bitwise_xor(v, tf.bitwise.right_shift(v, tf.constant(bits, tf.uint32)))
    x = xorshift(x, 16) * tf.constant(0x85EBCA6B, tf.uint32)
    x = xorshift(x, 13) * tf.constant(0xC2B2AE35, tf.uint32)
    return xorshift(x, 16)


def row_uniform(seeds: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """One uniform number in (0, 1) per row, a function of (its seed, step) only.

    seeds int32 [batch]; step int32 scalar. float32 [batch].
    """
    seed_bits = tf.bitwise.bitwise_xor(tf.bitcast(seeds, tf.uint32),
                                       tf.constant(0x9E3779B9, tf.uint32))
    hashed = _mix(tf.bitwise.bitwise_xor(_mix(seed_bits), tf.bitcast(step, tf.uint32)))
    # 24 bits fill a float32 mantissa; the half step keeps 0 and 1 out.
    top = tf.cast(tf.bitwise.right_shift(hashed, tf.constant(8, tf.uint32)), tf.float32)
    return (top + 0.5) * (1.0 / (1 << 24))


def sample(logits, temperature, top_k, top_p, seeds, step) -> tf.Tensor:
    """Draws one id per row (int64 [batch]); rows with temperature <= 0 take the argmax.

    Args:
      logits: float [batch, vocab].
      temperature: float32 [batch].
      top_k: int32 [batch], 0 = off.
      top_p: float32 [batch], 1.0 = off.
      seeds: int32 [batch], nonzero (see resolve_seeds).
      step: int32 scalar, the position of this draw in the row's sequence.
    """
    logits = mask_reserved(tf.cast(logits, tf.float32))
    greedy = tf.argmax(logits, axis=-1)
    scaled = logits / tf.maximum(temperature, 1e-6)[:, tf.newaxis]
    scaled = apply_top_p(apply_top_k(scaled, top_k), top_p)
    # Inverse-CDF sampling with the row's own uniform number.
    cdf = tf.math.cumsum(tf.nn.softmax(scaled), axis=-1)
    target = row_uniform(seeds, step) * cdf[:, -1]
    # Counting over all but the last column keeps the index in range whatever the rounding;
    # an id with zero probability never has cdf below target where its predecessor has not.
    sampled = tf.reduce_sum(tf.cast(cdf[:, :-1] < target[:, tf.newaxis], tf.int64), axis=-1)
    return tf.where(temperature > 0, sampled, greedy)


def resolve_seeds(seeds: tf.Tensor) -> tf.Tensor:
    """seed 0 means "random": such rows get a drawn seed; others keep theirs."""
    drawn = tf.random.uniform(tf.shape(seeds), 1, tf.int32.max, dtype=tf.int32)
    return tf.where(tf.equal(seeds, 0), drawn, seeds)
