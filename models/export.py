"""The servable SavedModel: one-step, whole-sequence generation and scoring signatures.

The character vocabulary is baked into the graph as constants, so the SavedModel needs
neither tensorflow_transform nor TFX to load, and raw text → ids happens inside it.

State layout (`states` input/output, float32 [batch, state_size]): the layers' states
concatenated in layer order; a GRU layer contributes h [units], an LSTM layer h then c
[2 × units]. Zeros start a new sequence.
"""
from typing import List

import tensorflow as tf
import tf_keras

from models import features, model as char_model, sampling, warm_start, warmup
from models.settings import SAMPLING_RULES

# Upper bound on prompt characters the graph accepts per row; beyond it the client
# should send only the tail (an RNN's memory of the far past is its state anyway).
MAX_PROMPT_CHARS = 100_000


class Generator(tf.Module):
    """Wraps the trained Keras model with the vocabulary and the sampling loop."""

    def __init__(self, keras_model: tf_keras.Model, vocab: List[str], mode: str):
        super().__init__(name="generator")
        self.model = keras_model
        self.embedding = keras_model.get_layer("embedding")
        self.cells = [layer.cell for layer in char_model.rnn_layers_of(keras_model)]
        self.dense = keras_model.get_layer("logits")
        self.cell_state_sizes = [
            list(c.state_size) if isinstance(c.state_size, (list, tuple)) else [c.state_size]
            for c in self.cells]
        self.state_size = sum(sum(s) for s in self.cell_state_sizes)
        keys = tf.constant(vocab, dtype=tf.string)
        self.char_to_id = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                keys, tf.range(features.NUM_RESERVED_IDS, len(vocab) + features.NUM_RESERVED_IDS,
                               dtype=tf.int64)),
            default_value=features.UNK_ID)
        # Reserved ids decode to "" so padding after a finished line vanishes.
        self.id_to_char = tf.constant([""] * features.NUM_RESERVED_IDS + list(vocab))
        self.stop_at_terminator = mode == "lines"
        self.terminator_id = (vocab.index(features.LINE_TERMINATOR) + features.NUM_RESERVED_IDS
                              if features.LINE_TERMINATOR in vocab else -1)
        # tf.functions with an input_signature (not concrete functions) are what make
        # tf.saved_model.save write the SignatureDef `defaults` for top_k, top_p, seed.
        # Every input is batch-major ([batch, ...]) so that TF Serving's batching, which
        # concatenates concurrent requests along dimension 0, can merge any call.
        self.one_step = tf.function(self._one_step, input_signature=[
            tf.TensorSpec([None], tf.string, name="chars"),
            tf.TensorSpec([None, self.state_size], tf.float32, name="states"),
            tf.TensorSpec([None], tf.float32, name="temperature"),
            tf.TensorSpec([None], tf.int32, name="seed")])
        self.generate = tf.function(self._generate, input_signature=[
            tf.TensorSpec([None], tf.string, name="prompts"),
            tf.TensorSpec([None], tf.int32, name="num_chars"),
            tf.TensorSpec([None], tf.float32, name="temperature"),
            tf.TensorSpec([None], tf.int32, name="top_k"),
            tf.TensorSpec([None], tf.float32, name="top_p"),
            tf.TensorSpec([None], tf.int32, name="seed")])
        self.resume = tf.function(self._resume, input_signature=[
            tf.TensorSpec([None], tf.string, name="prompts"),
            tf.TensorSpec([None, self.state_size], tf.float32, name="states"),
            tf.TensorSpec([None], tf.int32, name="position"),
            tf.TensorSpec([None], tf.int32, name="num_chars"),
            tf.TensorSpec([None], tf.float32, name="temperature"),
            tf.TensorSpec([None], tf.int32, name="top_k"),
            tf.TensorSpec([None], tf.float32, name="top_p"),
            tf.TensorSpec([None], tf.int32, name="seed")])
        self.score = tf.function(self._score, input_signature=[
            tf.TensorSpec([None], tf.string, name="examples")])

    # --- graph building blocks ------------------------------------------------------

    def encode(self, text: tf.Tensor) -> tf.RaggedTensor:
        """UTF-8 strings [batch] → ragged ids; unknown characters become [UNK]."""
        chars = tf.strings.unicode_split(text, "UTF-8", errors="replace")
        return tf.ragged.map_flat_values(self.char_to_id.lookup, chars)

    def decode(self, ids: tf.Tensor) -> tf.Tensor:
        """ids [batch, time] → strings [batch]."""
        return tf.strings.reduce_join(tf.gather(self.id_to_char, ids), axis=-1)

    def split_states(self, states: tf.Tensor):
        """[batch, state_size] → per layer list of state tensors (the cells' format)."""
        per_layer, offset = [], 0
        for sizes in self.cell_state_sizes:
            parts = []
            for size in sizes:
                parts.append(tf.cast(states[:, offset:offset + size], self.cells[0].compute_dtype))
                offset += size
            per_layer.append(parts)
        return per_layer

    def join_states(self, per_layer) -> tf.Tensor:
        return tf.concat([tf.cast(s, tf.float32) for parts in per_layer for s in parts], axis=-1)

    def step(self, ids: tf.Tensor, states: tf.Tensor):
        """One character per row: ids [batch] → logits [batch, vocab], new states."""
        x = self.embedding(ids)
        new_states = []
        for cell, cell_states in zip(self.cells, self.split_states(states)):
            x, cell_new = cell(x, cell_states if len(cell_states) > 1 else cell_states[0],
                               training=False)
            new_states.append(list(cell_new) if isinstance(cell_new, (list, tuple)) else [cell_new])
        return tf.cast(self.dense(x), tf.float32), self.join_states(new_states)

    def read_prompt(self, ids: tf.RaggedTensor, states: tf.Tensor, logits0=None):
        """Feeds each row's characters; rows may differ in length (shorter rows hold still).

        Returns the logits after each row's last character and the states there. With
        logits0 (the logits the states stand at), a row may be empty and keeps both.
        """
        if logits0 is None:
            tf.debugging.assert_positive(
                ids.row_lengths(), message="every prompt / chars row needs at least one character")
        tf.debugging.assert_less_equal(
            tf.reduce_max(ids.row_lengths()), tf.constant(MAX_PROMPT_CHARS, tf.int64),
            message=f"a prompt is longer than {MAX_PROMPT_CHARS} characters: send its tail")
        padded = ids.to_tensor(default_value=features.PAD_ID)
        lengths = ids.row_lengths()
        batch = tf.shape(padded)[0]
        if logits0 is None:
            logits0 = tf.zeros([batch, tf.shape(self.id_to_char)[0]], tf.float32)

        def body(t, logits, states):
            step_logits, step_states = self.step(padded[:, t], states)
            live = (tf.cast(t, tf.int64) < lengths)[:, tf.newaxis]
            return t + 1, tf.where(live, step_logits, logits), tf.where(live, step_states, states)

        _, logits, states = tf.while_loop(
            lambda t, *_: t < tf.shape(padded)[1], body, (tf.constant(0), logits0, states))
        return logits, states

    def _check_states(self, text, states):
        _check_batch(text, states=states)
        tf.debugging.assert_equal(
            tf.shape(states)[1], self.state_size,
            message=f"states must be float32 [batch, {self.state_size}]")

    def zero_states(self, batch) -> tf.Tensor:
        return tf.zeros([batch, self.state_size], tf.float32)

    def logits_at(self, states: tf.Tensor) -> tf.Tensor:
        """The next character's logits at a state: the top layer's output is its h (the
        first part of a GRU's or an LSTM's state)."""
        return tf.cast(self.dense(self.split_states(states)[-1][0]), tf.float32)

    def draw(self, logits, states, num_chars, temperature, top_k, top_p, seed, first=None,
             keep_end_states=False):
        """Draws num_chars[row] characters per row with the row's own sampling parameters
        (draws counted on from first[row], default 0), each fed back in; the loop runs to
        the longest row, and a row past its own num_chars (or, in lines mode, past its
        line's end) adds nothing. Returns (ids int64 [batch, 1 + longest], the first column
        padding; the states; ended bool [batch]: the row drew its line's terminator). With
        keep_end_states each row's states are those at its own end (to resume from), not
        the longest row's."""
        batch = tf.shape(num_chars)[0]
        pad = tf.fill([batch], tf.constant(features.PAD_ID, tf.int64))
        longest = tf.maximum(tf.reduce_max(num_chars), 0)  # 0 for an empty batch
        sampler = sampling.RowSampler(temperature, top_k, top_p, seed, longest, first)
        # Slot 0 holds padding so the array is never empty (num_chars = 0 is valid).
        out = tf.TensorArray(tf.int64, size=longest + 1, element_shape=[None]).write(0, pad)

        def body(i, logits, states, done, ended, out):
            done = done | (i >= num_chars)
            next_ids = tf.where(done, pad, sampler(logits, i))
            out = out.write(i + 1, next_ids)
            new_logits, new_states = self.step(next_ids, states)
            if keep_end_states:
                new_logits = tf.where(done[:, tf.newaxis], logits, new_logits)
                new_states = tf.where(done[:, tf.newaxis], states, new_states)
            if self.stop_at_terminator:
                hit = tf.equal(next_ids, self.terminator_id)
                done, ended = done | hit, ended | hit
            return i + 1, new_logits, new_states, done, ended, out

        def keep_going(i, logits, states, done, ended, out):
            return (i < longest) & ~tf.reduce_all(done)

        no = tf.zeros([batch], tf.bool)
        _, _, states, _, ended, out = tf.while_loop(
            keep_going, body, (tf.constant(0), logits, states, no, no, out))
        return tf.transpose(out.stack()), states, ended

    # --- signatures -----------------------------------------------------------------

    # Defaults have one row: a single-row request may leave them out, also under TF
    # Serving's batching (which needs every input of a request to have the same rows);
    # a parameter with one row applies to every row of the request.

    def _one_step(self, chars, states, temperature, seed=tf.constant([0])):
        """The tutorial's OneStep: feed chars (a prompt or the last character), sample one."""
        batch = tf.shape(chars)[0]
        self._check_states(chars, states)
        temperature = _per_row(temperature, batch, "temperature")
        seed = _per_row(seed, batch, "seed")
        _check_temperature(temperature)
        logits, states = self.read_prompt(self.encode(chars), states)
        sampler = sampling.RowSampler(temperature, tf.zeros([batch], tf.int32),
                                      tf.ones([batch], tf.float32),
                                      sampling.resolve_seeds(seed), tf.constant(1))
        next_ids = sampler(logits, tf.constant(0))
        return {"next_chars": tf.gather(self.id_to_char, next_ids), "states": states}

    def _generate(self, prompts, num_chars, temperature, top_k=tf.constant([0]),
                 top_p=tf.constant([1.0]), seed=tf.constant([0])):
        """Whole completions in one call: the sampling loop runs inside the graph.

        Rows may ask for different lengths: the loop runs to the longest, and a row
        past its own num_chars (or past its line's end in lines mode) adds nothing.
        """
        batch = tf.shape(prompts)[0]
        num_chars, temperature, top_k, top_p, seed = _sampling_rows(
            batch, num_chars, temperature, top_k, top_p, seed)
        logits, states = self.read_prompt(self.encode(prompts), self.zero_states(batch))
        ids, _, _ = self.draw(logits, states, num_chars, temperature, top_k, top_p, seed)
        completion = self.decode(ids)
        return {"text": prompts + completion, "completion": completion}

    def _resume(self, prompts, states, position, num_chars, temperature,
                top_k=tf.constant([0]), top_p=tf.constant([1.0]), seed=tf.constant([0])):
        """`generate` in pieces. Each row reads its prompt (empty: none) from `states` (zeros
        start a sequence), then draws num_chars characters, its draws counted on from
        `position` (the characters the row generated before). Returns the completion, the
        states after it and, in lines mode, whether the row ended its line (then it is
        complete). Pieces of one row give generate's text when each starts from the last
        one's states and position, with the same nonzero seed (0 draws a new random seed in
        every call)."""
        batch = tf.shape(prompts)[0]
        self._check_states(prompts, states)
        num_chars, temperature, top_k, top_p, seed = _sampling_rows(
            batch, num_chars, temperature, top_k, top_p, seed)
        position = _per_row(position, batch, "position")
        tf.debugging.assert_non_negative(position, message="position must be >= 0")
        logits, states = self.read_prompt(self.encode(prompts), states,
                                          logits0=self.logits_at(states))
        ids, states, ended = self.draw(logits, states, num_chars, temperature, top_k, top_p,
                                       seed, first=position, keep_end_states=True)
        return {"completion": self.decode(ids), "states": states, "ended": ended}

    def _score(self, examples):
        """Serialized raw tf.Examples → per-example summed NLL (nats) and character count."""
        parsed = tf.io.parse_example(
            examples, {features.TEXT_KEY: tf.io.FixedLenFeature([], tf.string)})
        ids = self.encode(parsed[features.TEXT_KEY]).to_tensor(default_value=features.PAD_ID)
        inputs, targets = char_model.to_inputs_and_targets(ids)
        nll, mask = char_model.masked_nll(targets, self.model(inputs, training=False))
        return {features.NLL_OUTPUT: tf.reduce_sum(nll, axis=-1),
                features.NUM_CHARS_OUTPUT: tf.reduce_sum(mask, axis=-1)}


def _check_batch(first, **others):
    batch = tf.shape(first)[0]
    for name, tensor in others.items():
        tf.debugging.assert_equal(tf.shape(tensor)[0], batch,
                                  message=f"{name} has a different batch size than the text input")


def _per_row(value, batch, name):
    """A per-row parameter with one value per row, or one value (any rank) for all rows."""
    fits = tf.debugging.assert_equal(
        (tf.size(value) == 1) | (tf.size(value) == batch), True,
        message=f"{name} needs one value per row of the text input, or a single value")
    with tf.control_dependencies([fits]):
        return tf.broadcast_to(tf.reshape(value, [-1]), [batch])


def _check_temperature(temperature):
    _check_sampling("temperature", temperature)


def _check_sampling(name, values):
    """A sampling parameter's rule (models/settings.py), checked in the graph as well: a
    request to TF Serving reaches the graph without textgen's pre-checks."""
    rule = SAMPLING_RULES[name]
    message = f"{name} must be {rule.text}"
    if values.dtype.is_floating:
        tf.debugging.assert_all_finite(values, message=message)
    low = tf.constant(rule.low, values.dtype)
    if rule.low_open:
        tf.debugging.assert_greater(values, low, message=message)
    else:
        tf.debugging.assert_greater_equal(values, low, message=message)
    if rule.high is not None:
        tf.debugging.assert_less_equal(values, tf.constant(rule.high, values.dtype),
                                       message=message)


def _sampling_rows(batch, num_chars, temperature, top_k, top_p, seed):
    """The generation parameters, one value per row, checked; seed 0 drawn at random."""
    num_chars = _per_row(num_chars, batch, "num_chars")
    temperature = _per_row(temperature, batch, "temperature")
    top_k = _per_row(top_k, batch, "top_k")
    top_p = _per_row(top_p, batch, "top_p")
    seed = sampling.resolve_seeds(_per_row(seed, batch, "seed"))
    _check_temperature(temperature)
    for name, values in (("num_chars", num_chars), ("top_k", top_k), ("top_p", top_p)):
        _check_sampling(name, values)
    return num_chars, temperature, top_k, top_p, seed


def signatures(generator: Generator):
    return {features.ONE_STEP_SIGNATURE: generator.one_step,
            features.GENERATE_SIGNATURE: generator.generate,
            features.RESUME_SIGNATURE: generator.resume,
            features.SCORE_SIGNATURE: generator.score}


def save(keras_model: tf_keras.Model, vocab: List[str], mode: str, export_dir: str) -> Generator:
    """Writes the servable SavedModel (float32 at every signature input and output) with
    its warm-up requests, and beside it the vocabulary and shape a later training needs to
    warm start from it."""
    generator = Generator(keras_model, vocab, mode)
    tf.saved_model.save(generator, export_dir, signatures=signatures(generator))
    warmup.write(export_dir, warmup.prediction_logs(
        warmup.inputs_by_signature(vocab, mode, generator.state_size)))
    warm_start.write_model_info(export_dir, vocab, mode, char_model.shape_of(keras_model))
    return generator
