"""The servable signatures: shapes, sampling rules, reproducibility, reload in a fresh process."""
import collections
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from models import export, features
from models.settings import SAMPLING_RULES
from conftest import TINY_VOCAB, build_tiny_model, call_signatures_in_fresh_process

V = len(TINY_VOCAB) + features.NUM_RESERVED_IDS


def fixed_distribution_generator(bias, mode="stream"):
    """A Generator whose next-character logits are `bias`, whatever the input."""
    m = build_tiny_model()
    kernel, _ = m.get_layer("logits").get_weights()
    m.get_layer("logits").set_weights([np.zeros_like(kernel), np.asarray(bias, np.float32)])
    return export.Generator(m, TINY_VOCAB, mode)


def generate(g, prompts, num_chars, temperature=1.0, top_k=0, top_p=1.0, seed=0):
    """Rows get seeds seed, seed + 1, ... (rows with one seed would draw alike)."""
    seeds = [seed + row if seed else 0 for row in range(len(prompts))]
    out = g.generate(tf.constant(prompts), tf.constant([num_chars]),
                     tf.fill([len(prompts)], float(temperature)), tf.constant([top_k]),
                     tf.constant([top_p], tf.float32), tf.constant(seeds))
    return [t.decode() for t in out["completion"].numpy()], [t.decode() for t in
                                                             out["text"].numpy()]


def test_reserved_ids_are_never_generated():
    bias = np.zeros(V)
    bias[features.PAD_ID] = bias[features.UNK_ID] = 50.0  # overwhelmingly likely if allowed
    g = fixed_distribution_generator(bias)
    completions, _ = generate(g, ["ab", "c"], 50, seed=3)
    assert [len(c) for c in completions] == [50, 50]  # [PAD]/[UNK] would decode to ""
    out = g.one_step(tf.constant(["a"]), tf.zeros([1, g.state_size]), tf.constant([1.0]),
                     tf.constant([5]))
    assert out["next_chars"].numpy()[0].decode() in TINY_VOCAB


def test_sampling_follows_softmax_at_temperature_one():
    bias = np.concatenate([[0.0, 0.0], np.linspace(-1.0, 2.0, len(TINY_VOCAB))])
    g = fixed_distribution_generator(bias)
    completions, _ = generate(g, ["a"] * 40, 300, seed=11)
    counts = collections.Counter("".join(completions))
    total = sum(counts.values())
    expected = tf.nn.softmax(bias[2:]).numpy()
    for char, p in zip(TINY_VOCAB, expected):
        assert counts[char] / total == pytest.approx(p, abs=0.015)


def test_temperature_zero_is_greedy_and_low_temperature_sharpens():
    bias = np.concatenate([[0.0, 0.0], np.linspace(0.0, 1.0, len(TINY_VOCAB))])
    g = fixed_distribution_generator(bias)
    top = TINY_VOCAB[-1]
    greedy, _ = generate(g, ["a", "b"], 30, temperature=0.0, seed=0)
    assert greedy == [top * 30] * 2
    share = {}
    for temperature in (0.05, 5.0):
        completions, _ = generate(g, ["a"] * 20, 200, temperature=temperature, seed=2)
        counts = collections.Counter("".join(completions))
        expected = tf.nn.softmax(bias[2:] / temperature).numpy()
        share[temperature] = counts[top] / 4000
        assert share[temperature] == pytest.approx(expected[-1], abs=0.03)
    # Sharper when colder, in what was sampled: the top character dominates at 0.05, not at 5.
    assert share[0.05] > 0.8 and share[5.0] < 0.2


def test_top_k_and_top_p_restrict_the_candidates():
    bias = np.concatenate([[0.0, 0.0], np.linspace(0.0, 3.0, len(TINY_VOCAB))])
    g = fixed_distribution_generator(bias)
    top3 = set(TINY_VOCAB[-3:])
    assert set("".join(generate(g, ["a"] * 8, 100, top_k=3, seed=4)[0])) <= top3
    assert set("".join(generate(g, ["a"] * 8, 100, top_k=1, seed=4)[0])) == {TINY_VOCAB[-1]}
    # The two most likely characters hold > 0.4 of the mass: top_p=0.4 keeps just them.
    probs = tf.nn.softmax(bias[2:]).numpy()
    assert probs[-1] < 0.4 < probs[-1] + probs[-2]
    assert set("".join(generate(g, ["a"] * 8, 100, top_p=0.4, seed=4)[0])) == set(TINY_VOCAB[-2:])


def test_seed_makes_generation_reproducible():
    g = export.Generator(build_tiny_model(seed=1), TINY_VOCAB, "stream")
    first = generate(g, ["ab", "hé"], 40, seed=7)
    assert generate(g, ["ab", "hé"], 40, seed=7) == first
    assert generate(g, ["ab", "hé"], 40, seed=8) != first


def test_lines_mode_stops_each_row_at_the_terminator():
    bias = np.zeros(V)
    bias[TINY_VOCAB.index("\n") + features.NUM_RESERVED_IDS] = 2.0
    g = fixed_distribution_generator(bias, mode="lines")
    completions, texts = generate(g, ["a", "b", "c"], 200, seed=5)
    for prompt, completion, text in zip("abc", completions, texts):
        assert completion.endswith("\n") and completion.count("\n") == 1
        assert text == prompt + completion


def test_one_step_carries_state_like_generate():
    """A greedy loop over the one-step signature reproduces greedy `generate`."""
    g = export.Generator(build_tiny_model(seed=2), TINY_VOCAB, "stream")
    expected, _ = generate(g, ["bad", "é"], 25, temperature=0.0)
    chars, states = tf.constant(["bad", "é"]), tf.zeros([2, g.state_size])
    produced = ["", ""]
    for _ in range(25):
        out = g.one_step(chars, states, tf.zeros([2]), tf.constant([0]))
        chars, states = out["next_chars"], out["states"]
        produced = [p + c.decode() for p, c in zip(produced, chars.numpy())]
    assert produced == expected


def test_num_chars_zero_returns_the_prompt():
    g = export.Generator(build_tiny_model(), TINY_VOCAB, "stream")
    assert generate(g, ["abc"], 0) == ([""], ["abc"])


def _rule(name):
    """The graph's message for a broken sampling rule: the rule's words (models/settings.py)."""
    return re.escape(f"{name} must be {SAMPLING_RULES[name].text}")


@pytest.mark.parametrize("call, message", [
    (lambda g: g.generate(tf.constant(["a"]), tf.constant([5]), tf.constant([-1.0]),
                          tf.constant([0]), tf.constant([1.0]), tf.constant([0])),
     _rule("temperature")),
    (lambda g: g.generate(tf.constant(["a", "b"]), tf.constant([5]), tf.constant([1.0, 1.0, 1.0]),
                          tf.constant([0]), tf.constant([1.0]), tf.constant([0])),
     "one value per row"),
    (lambda g: g.generate(tf.constant(["a"]), tf.constant([5]), tf.constant([1.0]),
                          tf.constant([0]), tf.constant([1.5]), tf.constant([0])), _rule("top_p")),
    (lambda g: g.generate(tf.constant(["a"]), tf.constant([5]), tf.constant([1.0]),
                          tf.constant([0]), tf.constant([0.0]), tf.constant([0])), _rule("top_p")),
    (lambda g: g.generate(tf.constant(["a"]), tf.constant([5]), tf.constant([1.0]),
                          tf.constant([-1]), tf.constant([1.0]), tf.constant([0])), _rule("top_k")),
    (lambda g: g.generate(tf.constant(["a"]), tf.constant([-1]), tf.constant([1.0]),
                          tf.constant([0]), tf.constant([1.0]), tf.constant([0])),
     _rule("num_chars")),
    (lambda g: g.generate(tf.constant([""]), tf.constant([5]), tf.constant([1.0]),
                          tf.constant([0]), tf.constant([1.0]), tf.constant([0])), "at least one"),
    (lambda g: g.one_step(tf.constant(["a"]), tf.zeros([1, g.state_size]),
                          tf.constant([float("nan")]), tf.constant([0])), _rule("temperature")),
    (lambda g: g.resume(tf.constant(["a"]), tf.zeros([1, g.state_size]), tf.constant([0]),
                        tf.constant([5]), tf.constant([float("inf")])), _rule("temperature")),
])
def test_bad_inputs_raise_invalid_argument_naming_the_input(call, message):
    g = export.Generator(build_tiny_model(), TINY_VOCAB, "stream")
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        call(g)


def test_signature_defaults_are_written(tiny_model_dir):
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(tiny_model_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    sigs = sm.meta_graphs[0].signature_def
    assert set(sigs["generate"].defaults) == {"top_k", "top_p", "seed"}
    assert set(sigs[features.ONE_STEP_SIGNATURE].defaults) == {"seed"}
    assert set(sigs[features.ONE_STEP_SIGNATURE].inputs) == {"chars", "states", "temperature",
                                                               "seed"}
    assert set(sigs[features.ONE_STEP_SIGNATURE].outputs) == {"next_chars", "states"}
    assert set(sigs["generate"].outputs) == {"text", "completion"}
    assert set(sigs[features.SCORE_SIGNATURE].outputs) == {"nll", "num_chars"}


def test_reloads_in_a_fresh_process_at_new_batch_sizes(tiny_model_dir):
    state = 16
    out = call_signatures_in_fresh_process(tiny_model_dir, state)
    for batch in ("1", "5"):
        assert len(out[batch]["text"]) == int(batch)
        assert all(len(t) > 0 for t in out[batch]["next"])
        assert out[batch]["states"] == [int(batch), state]
    assert out["5"]["text"][0].startswith("ROMEO:") and out["5"]["text"][2].startswith("hé hé")
    prompts = ["ROMEO:", "a", "hé hé", "b\n", "cdefg"]
    assert all(len(t) == len(p) + 12 for t, p in zip(out["5"]["text"], prompts))
    # Seeded (9) there, seeded here: the same text, byte for byte.
    here = tf.saved_model.load(tiny_model_dir).signatures["generate"](
        prompts=tf.constant(prompts), num_chars=tf.constant(12), temperature=tf.fill([5], 0.7),
        top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(9))["text"]
    assert [t.encode() for t in out["5"]["text"]] == list(here.numpy())


def test_mixed_precision_model_exports_float32_signatures(tmp_path):
    import tf_keras
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        m = build_tiny_model()
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert m.get_layer("rnn_0").compute_dtype == "bfloat16"
    export.save(m, TINY_VOCAB, "stream", str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    out = loaded.signatures["serving_default"](
        chars=tf.constant(["ab"]), states=tf.zeros([1, 16]), temperature=tf.constant([1.0]),
        seed=tf.constant([3]))
    assert out["states"].dtype == tf.float32
    text = loaded.signatures["generate"](
        prompts=tf.constant(["ab"]), num_chars=tf.constant([5]), temperature=tf.constant([1.0]),
        top_k=tf.constant([0]), top_p=tf.constant([1.0]), seed=tf.constant([3]))["text"]
    assert len(text.numpy()[0].decode()) == 7


def scored(g, texts):
    examples = [tf.train.Example(features=tf.train.Features(feature={
        features.TEXT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode()]))}))
        .SerializeToString() for t in texts]
    out = g.score(tf.constant(examples))
    return out[features.NLL_OUTPUT].numpy(), out[features.NUM_CHARS_OUTPUT].numpy()


def test_score_leaves_padding_out_of_nll_and_counts():
    """Lines mode: a long and a short line in one batch (the short one padded) score as
    each does alone; a record of n characters counts n - 1 predicted characters."""
    g = export.Generator(build_tiny_model(seed=3), TINY_VOCAB, "lines")
    long, short = "abcdefgh hé:dcba\n", "ab\n"
    nll, chars = scored(g, [long, short])
    for i, line in enumerate((long, short)):
        alone_nll, alone_chars = scored(g, [line])
        assert chars[i] == alone_chars[0] == len(line) - 1
        assert nll[i] == pytest.approx(alone_nll[0], rel=1e-6)
    assert nll[1] < nll[0]


def test_every_signature_input_and_output_is_batch_major(tiny_model_dir):
    """TF Serving's batching concatenates requests along dimension 0 and splits outputs
    back along it: every input and output needs a leading batch dimension."""
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(tiny_model_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    served = {name: sig for name, sig in sm.meta_graphs[0].signature_def.items()
              if name != "__saved_model_init_op"}
    assert set(served) == {features.ONE_STEP_SIGNATURE, features.GENERATE_SIGNATURE,
                           features.RESUME_SIGNATURE, features.SCORE_SIGNATURE}
    for name, sig in served.items():
        for alias, info in [*sig.inputs.items(), *sig.outputs.items()]:
            dims = [d.size for d in info.tensor_shape.dim]
            assert dims and dims[0] == -1, (name, alias, dims)
        for alias, default in sig.defaults.items():
            assert [d.size for d in default.tensor_shape.dim] == [1], (name, alias)


def test_a_row_samples_the_same_alone_or_amid_other_rows():
    """A row's randomness depends on its own seed and step only: the same request gives
    the same text alone and in a batch whose other rows differ in every parameter."""
    g = export.Generator(build_tiny_model(seed=1), TINY_VOCAB, "stream")

    def call(prompts, num_chars, temperature, top_k, top_p, seed):
        out = g.generate(tf.constant(prompts), tf.constant(num_chars, tf.int32),
                         tf.constant(temperature, tf.float32), tf.constant(top_k, tf.int32),
                         tf.constant(top_p, tf.float32), tf.constant(seed, tf.int32))
        return [t.decode() for t in out["completion"].numpy()]

    rows = [("ab", 30, 1.0, 0, 1.0, 7), ("hé", 12, 0.7, 3, 1.0, 8), ("c", 45, 1.3, 0, 0.8, 9),
            ("dd\n", 0, 0.0, 0, 1.0, 10), ("ab", 30, 1.0, 0, 1.0, 11)]
    alone = [call(*[[value] for value in row])[0] for row in rows]
    together = call(*[list(column) for column in zip(*rows)])
    assert together == alone
    assert [len(c) for c in together] == [30, 12, 45, 0, 30]  # each row its own length
    assert together[0] != together[4]  # same prompt, other seed: another sample
    # And on another step of the batch order, too.
    assert call(*[list(column) for column in zip(*rows[::-1])]) == together[::-1]


def test_one_value_applies_to_every_row():
    g = export.Generator(build_tiny_model(seed=1), TINY_VOCAB, "stream")
    single = g.generate(tf.constant(["ab", "c"]), tf.constant([9]), tf.constant([0.9]),
                        tf.constant([0]), tf.constant([1.0]), tf.constant([5]))
    per_row = g.generate(tf.constant(["ab", "c"]), tf.constant([9, 9]),
                         tf.constant([0.9, 0.9]), tf.constant([0, 0]), tf.constant([1.0, 1.0]),
                         tf.constant([5, 5]))
    assert single["text"].numpy().tolist() == per_row["text"].numpy().tolist()


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_resume_in_pieces_gives_generates_text(mode):
    """Rows of different lengths and sampling parameters, generated in pieces of 7 (each
    from the last one's states and position), give `generate`'s text; in lines mode a row
    that ended its line says so and adds nothing more."""
    import numpy as np
    import tensorflow as tf
    g = export.Generator(build_tiny_model(rnn_layers=2, cell="lstm", seed=4), TINY_VOCAB, mode)
    prompts = ["ab", "hé hé", "c"]
    sampling = dict(temperature=tf.constant([0.9, 0.0, 1.3]), top_k=tf.constant([0, 0, 3]),
                    top_p=tf.constant([1.0, 1.0, 0.9]), seed=tf.constant([5, 6, 7]))
    remaining = np.array([30, 17, 25], np.int32)
    whole = g.generate(prompts=tf.constant(prompts), num_chars=tf.constant(remaining),
                       **sampling)["completion"].numpy()
    states = tf.zeros([3, g.state_size])
    position, pieces, ended = np.zeros(3, np.int32), [b""] * 3, np.zeros(3, bool)
    while ((remaining > 0) & ~ended).any():
        n = np.where(ended, 0, np.minimum(remaining, 7)).astype(np.int32)
        out = g.resume(prompts=tf.constant(prompts), states=states, position=position,
                       num_chars=n, **sampling)
        pieces = [p + c for p, c in zip(pieces, out["completion"].numpy())]
        states, ended = out["states"], ended | out["ended"].numpy()
        position, remaining, prompts = position + n, remaining - n, [""] * 3
    assert pieces == list(whole)
    assert ended.any() == (mode == "lines")
    if mode == "lines":
        for text, done in zip(pieces, ended):
            assert text.endswith(b"\n") == done


def test_the_run_summary_samples_each_prompt_with_its_own_seed(tiny_model_dir):
    from pipeline import summary
    twice = summary.sample(tiny_model_dir, ["ab", "ab", "ab"], 40, seed=5)
    assert twice == summary.sample(tiny_model_dir, ["ab", "ab", "ab"], 40, seed=5)
    assert len(set(twice)) == 3  # same prompt, three seeds, three texts
    # Prompt i draws as a lone request seeded seed + i.
    assert summary.sample(tiny_model_dir, ["ab"], 40, seed=6) == twice[1:2]
