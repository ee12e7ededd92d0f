"""The RNN, the masked loss and the perplexity metric, against hand computations."""
import math

import numpy as np
import pytest
import tensorflow as tf

from models import features, model
from models.metrics import perplexity_from_sums
from conftest import build_tiny_model


@pytest.mark.parametrize("cell, layers", [("gru", 1), ("lstm", 2)])
def test_logits_shape(cell, layers):
    m = build_tiny_model(rnn_layers=layers, cell=cell)
    logits = m(tf.constant([[2, 3, 4], [5, 6, 0]], tf.int64))
    assert logits.shape == (2, 3, m.get_layer("logits").units)
    assert len(model.rnn_layers_of(m)) == layers


def test_gru_settings_stay_cudnn_compatible():
    gru = model.rnn_layers_of(build_tiny_model())[0]
    assert gru.activation.__name__ == "tanh" and gru.recurrent_activation.__name__ == "sigmoid"
    assert gru.reset_after and gru.recurrent_dropout == 0 and not gru.unroll and gru.use_bias


def test_inputs_and_targets_are_shifted_by_one():
    inputs, targets = model.to_inputs_and_targets(tf.constant([[2, 3, 4, 5]]))
    assert inputs.numpy().tolist() == [[2, 3, 4]] and targets.numpy().tolist() == [[3, 4, 5]]


def test_padding_counts_neither_in_loss_nor_perplexity():
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(2, 4, 7)), tf.float32)
    targets = tf.constant([[2, 3, 4, 5], [6, 2, 0, 0]], tf.int64)  # row 2: two padding slots
    log_probs = tf.nn.log_softmax(logits).numpy()
    real = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    total = -sum(log_probs[b, t, targets.numpy()[b, t]] for b, t in real)

    loss = model.MaskedCharLoss()(targets, logits).numpy()
    assert loss == pytest.approx(total / 6, rel=1e-5)

    metric = model.CharPerplexity()
    metric.update_state(targets[:1], logits[:1])
    metric.update_state(targets[1:], logits[1:])
    assert metric.result().numpy() == pytest.approx(math.exp(total / 6), rel=1e-5)


def test_perplexity_from_sums():
    # Two examples: 10 chars with NLL 10 (1 nat/char) and 1 char with NLL 3. (That the
    # Evaluator pools examples this way: tests/test_metrics.py and the end-to-end test.)
    ppl, nats, bits = perplexity_from_sums(10.0 + 3.0, 11.0)
    assert ppl == pytest.approx(math.exp(13 / 11))
    assert bits == pytest.approx(nats / math.log(2))
    assert math.isnan(perplexity_from_sums(0.0, 0.0)[0])


def test_a_few_training_steps_lower_the_loss():
    vocab_size = 12
    m = model.compile_model(build_tiny_model(), learning_rate=0.05)
    ids = tf.constant([[2, 3, 4, 5, 6, 7, 2, 3, 4, 5, 6, 7]] * 8, tf.int64)
    x, y = model.to_inputs_and_targets(ids)
    history = m.fit(x, y, epochs=15, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] * 0.7
    assert m.output_shape[-1] == vocab_size + features.NUM_RESERVED_IDS


def test_weight_decay_shrinks_the_weight_matrices_by_lr_times_decay_and_spares_the_biases():
    lr, decay = 0.01, 5.0
    ids = tf.constant([[2, 3, 4, 5, 6, 7, 2, 3]] * 4, tf.int64)
    x, y = model.to_inputs_and_targets(ids)
    after = {}
    for wd in (0.0, decay):
        m = model.compile_model(build_tiny_model(seed=3), learning_rate=lr, weight_decay=wd)
        before = {w.name: w.numpy() for w in m.trainable_weights}
        m.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)  # one step
        after[wd] = {w.name: w.numpy() for w in m.trainable_weights}
    assert type(m.optimizer).__name__ == "AdamW"
    for name, w0 in before.items():
        gap = after[0.0][name] - after[decay][name]
        if "bias" in name:
            np.testing.assert_array_equal(gap, 0.0, err_msg=name)
        else:  # the same gradient step, plus the decay of what the weight was
            np.testing.assert_allclose(gap, lr * decay * w0, atol=1e-6, err_msg=name)
