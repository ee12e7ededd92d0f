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
    vocab_size = tf.shape(logits)[-1]
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab_size), vocab_size)
    descending = tf.sort(logits, axis=-1, direction="DESCENDING")
    kth_largest = tf.gather(descending, k - 1, batch_dims=1)[:, tf.newaxis]
    return tf.where(logits < kth_largest, tf.constant(_NEG, logits.dtype), logits)


def apply_top_p(logits: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Keeps per row the smallest set of most likely ids whose probability reaches top_p
    (float32 [batch]); the most likely id is always kept; top_p >= 1 keeps all."""
    sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
    mass_before = tf.math.cumsum(tf.nn.softmax(sorted_logits), axis=-1, exclusive=True)
    kept = tf.where(mass_before < top_p[:, tf.newaxis], sorted_logits,
                    tf.constant(float("inf"), logits.dtype))
    threshold = tf.reduce_min(kept, axis=-1, keepdims=True)
    nucleus = tf.where(logits < threshold, tf.constant(_NEG, logits.dtype), logits)
    # Rows with top_p 1 stay exact (a cumulative sum may round to 1 before the tail).
    return tf.where((top_p < 1.0)[:, tf.newaxis], nucleus, logits)


def _mix(x: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finalizer: every input bit flips each output bit about half
    the time, so consecutive seeds and steps give unrelated numbers."""
    def xorshift(v, bits):
        return tf.bitwise.bitwise_xor(v, tf.bitwise.right_shift(v, tf.constant(bits, tf.uint32)))
    x = xorshift(x, 16) * tf.constant(0x85EBCA6B, tf.uint32)
    x = xorshift(x, 13) * tf.constant(0xC2B2AE35, tf.uint32)
    return xorshift(x, 16)


def row_uniforms(seeds: tf.Tensor, steps: tf.Tensor, first=None) -> tf.Tensor:
    """Uniform numbers in (0, 1), float32 [steps, batch]: entry [i, row] is a function of
    (seeds[row], first[row] + i) only. seeds int32 [batch]; steps int32 scalar; first int32
    [batch], the draws a row made before (default none), so that a generation resumed from
    a state continues the row's own sequence of numbers."""
    seed_bits = _mix(tf.bitwise.bitwise_xor(tf.bitcast(seeds, tf.uint32),
                                            tf.constant(0x9E3779B9, tf.uint32)))
    counters = tf.range(steps)[:, tf.newaxis]
    if first is not None:
        counters = counters + first[tf.newaxis, :]
    step_bits = tf.bitcast(counters, tf.uint32)
    hashed = _mix(tf.bitwise.bitwise_xor(seed_bits[tf.newaxis, :], step_bits))
    # 24 bits fill a float32 mantissa; the half step keeps 0 and 1 out.
    top = tf.cast(tf.bitwise.right_shift(hashed, tf.constant(8, tf.uint32)), tf.float32)
    return (top + 0.5) * (1.0 / (1 << 24))


class RowSampler:
    """Draws one id per row from logits, with each row's own parameters and randomness.

    Everything that does not change from step to step (the hashed uniform numbers of every
    step included) is computed once here, outside the generation loop: the loop's cost per
    character is what a lone caller waits for.

    Args:
      temperature: float32 [batch]; rows with temperature <= 0 take the argmax.
      top_k: int32 [batch], 0 = off.
      top_p: float32 [batch], 1.0 = off.
      seeds: int32 [batch], nonzero (see resolve_seeds).
      steps: int32 scalar, how many draws each row will make.
      first: int32 [batch], the draws each row made before (default none).
    """

    def __init__(self, temperature, top_k, top_p, seeds, steps, first=None):
        self.inverse_temperature = (1.0 / tf.maximum(temperature, 1e-6))[:, tf.newaxis]
        self.greedy = temperature <= 0
        self.top_k, self.top_p = top_k, top_p
        # Conds, not arithmetic that keeps all: the sort costs a lot per generated character.
        self.any_top_k = tf.reduce_any(top_k > 0)
        self.any_top_p = tf.reduce_any(top_p < 1.0)
        self.uniforms = row_uniforms(seeds, steps, first)

    def __call__(self, logits, step) -> tf.Tensor:
        """The ids (int64 [batch]) of draw number `step` (int32 scalar)."""
        logits = mask_reserved(tf.cast(logits, tf.float32))
        greedy = tf.argmax(logits, axis=-1)
        scaled = logits * self.inverse_temperature
        scaled = tf.cond(self.any_top_k, lambda: apply_top_k(scaled, self.top_k),
                         lambda: scaled)
        scaled = tf.cond(self.any_top_p, lambda: apply_top_p(scaled, self.top_p),
                         lambda: scaled)
        # Inverse-CDF sampling with the row's own uniform number for this step.
        cdf = tf.math.cumsum(tf.nn.softmax(scaled), axis=-1)
        target = self.uniforms[step] * cdf[:, -1]
        # The first id whose cumulative probability exceeds the target; an id of zero
        # probability never is (its cdf equals its predecessor's). The minimum guards
        # against rounding at the top.
        sampled = tf.minimum(tf.searchsorted(cdf, target[:, tf.newaxis], side="right",
                                             out_type=tf.int64)[:, 0],
                             tf.cast(tf.shape(cdf)[-1] - 1, tf.int64))
        return tf.where(self.greedy, greedy, sampled)


def resolve_seeds(seeds: tf.Tensor) -> tf.Tensor:
    """seed 0 means "random": such rows get a drawn seed; others keep theirs."""
    drawn = tf.random.uniform(tf.shape(seeds), 1, tf.int32.max, dtype=tf.int32)
    return tf.where(tf.equal(seeds, 0), drawn, seeds)
