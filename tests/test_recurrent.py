"""models/recurrent.py: Keras' LSTM and GRU with one matrix product a step — the same
outputs, states and gradients as Keras' own layers, and the loops really thinner."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models import recurrent

UNITS, FEATURES, BATCH, TIME = 8, 5, 3, 7


def pair(cell, policy="float32", **kwargs):
    """(ours, Keras'), built on the same input shape and holding the same weights."""
    kinds = {"lstm": (recurrent.LSTM, tf_keras.layers.LSTM),
             "gru": (recurrent.GRU, tf_keras.layers.GRU)}[cell]
    layers = [kind(UNITS, return_sequences=True, return_state=True, dtype=policy, **kwargs)
              for kind in kinds]
    for layer in layers:
        layer.build((None, None, FEATURES))
    rng = np.random.default_rng(1)
    weights = [rng.normal(scale=0.5, size=w.shape).astype(np.float32)
               for w in layers[1].get_weights()]
    for layer in layers:
        layer.set_weights(weights)
    return layers


def run(layer, inputs, initial_state=None, used=None):
    """(output, states..., gradients of a loss of the `used` results — all by default — for
    the inputs, the initial states and each weight)."""
    watched = [inputs] + list(initial_state or [])
    with tf.GradientTape() as tape:
        tape.watch(watched)
        results = layer(inputs, initial_state=initial_state)
        loss = sum(tf.reduce_sum(tf.cast(r, tf.float32) * (k + 1))
                   for k, r in enumerate(results[:used]))
    grads = tape.gradient(loss, watched + layer.trainable_weights)
    return [np.asarray(tf.cast(t, tf.float32)) for t in results + grads]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("with_state", [False, True])
def test_same_outputs_states_and_gradients_as_keras(cell, with_state):
    ours, keras = pair(cell)
    rng = np.random.default_rng(2)
    inputs = tf.constant(rng.normal(size=(BATCH, TIME, FEATURES)), tf.float32)
    state = None
    if with_state:
        count = 2 if cell == "lstm" else 1
        state = [tf.constant(rng.normal(size=(BATCH, UNITS)), tf.float32) for _ in range(count)]
    for got, want in zip(run(ours, inputs, state), run(keras, inputs, state)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_loss_of_the_outputs_alone_has_keras_gradients(cell):
    """The model's case: the last states go nowhere (or, carried, outside the tape)."""
    ours, keras = pair(cell)
    inputs = tf.constant(np.random.default_rng(4).normal(size=(BATCH, TIME, FEATURES)),
                         tf.float32)
    for got, want in zip(run(ours, inputs, used=1), run(keras, inputs, used=1)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_same_as_keras_under_mixed_bfloat16(cell):
    ours, keras = pair(cell, policy="mixed_bfloat16")
    inputs = tf.constant(np.random.default_rng(3).normal(size=(BATCH, TIME, FEATURES)),
                         tf.float32)
    for got, want in zip(run(ours, inputs), run(keras, inputs)):
        # bf16 keeps 8 bits of mantissa, and the products' order of summation differs: a
        # gradient summed over batch and time carries an error of about 1% of its largest
        # element into every element, so a near-zero one fails any elementwise tolerance.
        # Where bf16 is emulated (AVX2 only) Keras' own kernel gradient is 1.4% of its
        # scale from float32's; a wrong gate or product would be off by the whole scale.
        np.testing.assert_allclose(got, want, rtol=0, atol=0.03 * np.abs(want).max())
    assert ours(inputs)[0].dtype == tf.bfloat16


def matmuls_in_loops(layer, inputs) -> list:
    """The number of matrix products in each while-loop body of a traced training step's
    graph (the layer's output, and its gradients for the inputs and weights)."""
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x)[0], tf.float32))
        return tape.gradient(loss, [x] + layer.trainable_weights)
    graph_def = tf.function(step).get_concrete_function(inputs).graph.as_graph_def()
    library = {f.signature.name: f for f in graph_def.library.function}
    nodes = list(graph_def.node) + [n for f in library.values() for n in f.node_def]
    bodies = [library[n.attr["body"].func.name] for n in nodes
              if n.op in ("While", "StatelessWhile")]
    return [sum(n.op in ("MatMul", "BatchMatMulV2", "Einsum") for n in body.node_def)
            for body in bodies]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_each_time_loop_holds_only_the_state_product(cell):
    ours, keras = pair(cell)
    inputs = tf.TensorSpec([BATCH, TIME, FEATURES], tf.float32)
    assert matmuls_in_loops(ours, inputs) == [1, 1]  # forward, backward
    # Keras': the input's product and the kernels' gradients too (what ours takes out).
    assert max(matmuls_in_loops(keras, inputs)) > 1


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_what_it_does_not_hoist_goes_to_keras_unchanged(cell):
    """A mask (padding ids under Embedding(mask_zero=True)); dropout inside the cell."""
    ids = tf.constant([[3, 4, 5, 0, 0], [6, 7, 8, 9, 2]], tf.int64)
    embedding = tf_keras.layers.Embedding(10, FEATURES, mask_zero=True)
    embedded, mask = embedding(ids), embedding.compute_mask(ids)
    ours, keras = pair(cell)
    for got, want in zip(ours(embedded, mask=mask), keras(embedded, mask=mask)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    ours, keras = pair(cell, recurrent_dropout=0.5)
    for got, want in zip(ours(embedded), keras(embedded)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert max(matmuls_in_loops(ours, tf.TensorSpec([2, 5, FEATURES], tf.float32))) > 1
