"""DropConnect on the recurrent weights (`model.weight_drop`): one training step by hand."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models import carry, model, weight_drop
from models.settings import ModelSettings

RATE, LR = 0.5, 0.1
DRAW = weight_drop.draw_mask


def _core(cell, return_state=False):
    tf_keras.utils.set_random_seed(3)
    return model.build_model(12, ModelSettings(embedding_dim=6, rnn_units=8, rnn_layers=2,
                                               cell=cell, dropout=0.0),
                             return_state=return_state)


def _batch():
    ids = np.random.default_rng(1).integers(2, 12, size=(4, 7))
    return model.to_inputs_and_targets(tf.constant(ids, tf.int64))


def _gradients_by_hand(core, weights, masks, inputs, targets):
    """The plain model's gradients at the weights with each recurrent matrix times its mask."""
    kernels = weight_drop.recurrent_kernels(core)
    core.set_weights(weights)
    for kernel, mask in zip(kernels, masks):
        kernel.assign(kernel * mask)
    with tf.GradientTape() as tape:
        loss = model.MaskedCharLoss()(targets, core(inputs, training=True))
    # Dense arrays: the embedding's gradient comes as IndexedSlices.
    return [tf.convert_to_tensor(g).numpy()
            for g in tape.gradient(loss, core.trainable_variables)]


def _compiled(trained, run_eagerly=False, learning_rate=LR):
    trained.compile(optimizer=tf_keras.optimizers.SGD(learning_rate),
                    loss=model.MaskedCharLoss(),
                    run_eagerly=run_eagerly)
    return trained


@pytest.mark.parametrize("cell, carried", [("gru", False), ("lstm", False), ("gru", True)])
def test_a_step_trains_through_the_dropped_matrices_and_keeps_the_whole_ones(
        cell, carried, monkeypatch):
    drawn = []

    def draw_mask(*args):
        drawn.append(DRAW(*args).numpy())
        return tf.constant(drawn[-1])

    monkeypatch.setattr(weight_drop, "draw_mask", draw_mask)
    core = _core(cell, return_state=carried)
    # Eagerly, so the masks drawn can be read; the compiled step is the next test's.
    trained = _compiled(carry.CarriedState(core, 4, weight_drop=RATE) if carried
                        else weight_drop.WeightDropped(core, RATE), run_eagerly=True)
    inputs, targets = _batch()
    before = core.get_weights()
    kernels = weight_drop.recurrent_kernels(core)
    positions = [[v.ref() for v in core.trainable_variables].index(k.ref()) for k in kernels]
    trained.train_on_batch(inputs, targets)
    after = core.get_weights()
    assert len(drawn) == len(kernels) == 2
    assert all(set(np.unique(m)) == {0, 1 / (1 - RATE)} for m in drawn)
    grads = _gradients_by_hand(_core(cell), before, drawn, inputs, targets)
    for i, (w0, w1, g) in enumerate(zip(before, after, grads)):
        # SGD: every weight moved by the gradient taken through the dropped matrices; the
        # recurrent ones by its chain rule (times the mask), from the whole matrix, not
        # from the dropped one left behind.
        expected = w0 - LR * (g * drawn[positions.index(i)] if i in positions else g)
        np.testing.assert_allclose(w1, expected, rtol=1e-4, atol=1e-6)
    for i, mask in zip(positions, drawn):
        assert (after[i][mask == 0] == before[i][mask == 0]).all(), "dropped: no gradient"
    # What it predicts with is the whole matrices, as the plain network would.
    plain = _core(cell)
    plain.set_weights(after)
    np.testing.assert_allclose(trained.predict_on_batch(inputs),
                               plain.predict_on_batch(inputs), rtol=1e-5, atol=1e-6)


def test_the_compiled_step_drops_a_new_mask_each_step():
    core = _core("lstm")
    # Steps large enough that an entry kept moves by more than its float32 rounding.
    trained = _compiled(weight_drop.WeightDropped(core, RATE), learning_rate=10.0)
    inputs, targets = _batch()
    kernels = weight_drop.recurrent_kernels(core)
    inputs_matrix = core.get_layer("rnn_0").cell.kernel
    unchanged, start = [], inputs_matrix.numpy()
    for _ in range(2):
        before = [k.numpy() for k in kernels]
        trained.train_on_batch(inputs, targets)
        unchanged.append([(k.numpy() == b) for k, b in zip(kernels, before)])
    for first, second in zip(*unchanged):
        # About half of each matrix dropped (left unchanged), a different half each step.
        assert 0.35 < first.mean() < 0.65 and 0.35 < second.mean() < 0.65
        assert (first != second).mean() > 0.3
    # The input matrices are not dropped: they move all over.
    assert (inputs_matrix.numpy() != start).mean() > 0.95


def test_rate_zero_is_a_plain_step():
    core = _core("gru", return_state=True)
    trained = _compiled(carry.CarriedState(core, 4))
    inputs, targets = _batch()
    before = core.get_weights()
    trained.train_on_batch(inputs, targets)
    grads = _gradients_by_hand(_core("gru"), before, [1.0, 1.0], inputs, targets)
    for w0, w1, g in zip(before, core.get_weights(), grads):
        np.testing.assert_allclose(w1, w0 - LR * g, rtol=1e-4, atol=1e-6)


def test_several_replicas_and_bad_rates_are_refused_with_what_to_change():
    from pipeline import configs

    class TwoReplicas:
        num_replicas_in_sync = 2

    with pytest.raises(ValueError, match=r"weight_drop.*2 \(TwoReplicas.*CUDA_VISIBLE"):
        weight_drop.check_strategy(TwoReplicas())
    weight_drop.check_strategy(tf.distribute.get_strategy())
    with pytest.raises(configs.ConfigError, match=r"model.weight_drop \(--weight-drop\) = 1"):
        configs.load(overrides={"model": {"weight_drop": 1}})
    with pytest.raises(configs.ConfigError, match=r"model.weight_drop.*trainer_gpus = 2"):
        configs.load(overrides={"vertex": {"trainer_gpus": 2}, "model": {"weight_drop": 0.2}})
