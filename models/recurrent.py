"""Keras' LSTM and GRU layers, trained faster on a CPU: one matrix product per time step.

Keras' CPU kernels (tf_keras `standard_lstm` / `standard_gru`, differentiated by autodiff)
do at each character, forward, the input's [batch, features] × [features, gates] product
beside the state's, and backward the input's and both kernels' gradients — four thin
products a step, the kernel gradients added into [units, gates] accumulators 100 times a
window. Only the state's product depends on the step before. Here the input's product is
one product over every position before the loop, the backward pass is written out, and each
kernel's gradient is one product over every position after its loop: the loops hold the one
product the recurrence needs (the whole train step 1.17-1.25× as many characters per
CPU-second in bf16 on a Zen 4, bench/NOTES.md).

The layers are Keras' own, subclassed: the same cell, weights, checkpoint paths, state
layout and served one-step (models/export.py steps the cell itself), the same results and
gradients up to rounding (tests/test_recurrent.py). Where Keras would do something else — a
GPU (cuDNN's fused kernel), a mask, dropout inside the cell, going backwards, other
activations, `reset_after=False` — they hand the call to Keras unchanged.
"""
import tensorflow as tf
import tf_keras


def _read(variable) -> tf.Tensor:
    """The variable's value once, before the loop (in the compute dtype under a mixed
    policy): read in the step, it would be read and cast again at every position."""
    return variable.read_value()


def _arrays(dtype, steps) -> tf.TensorArray:
    return tf.TensorArray(dtype, size=steps)


def _defaults(upstream, like):
    """Zeros for the outputs a loss did not use (custom_gradient passes None for them)."""
    return [tf.zeros_like(y) if d is None else d for d, y in zip(upstream, like)]


def lstm_sequence(projected, h0, c0, recurrent_kernel):
    """LSTM over time-major `projected` ([time, batch, 4 × units]: the input's product and
    the bias; Keras' gate order i, f, c, o) → (every h, last h, last c)."""

    @tf.custom_gradient
    def run(projected, h0, c0, recurrent_kernel):
        steps, dtype = tf.shape(projected)[0], projected.dtype

        def step(t, h, c, hs, cs, gates):
            z = projected[t] + tf.matmul(h, recurrent_kernel)
            i, f, g, o = tf.split(z, 4, axis=-1)
            i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
            c = f * c + i * g
            h = o * tf.tanh(c)
            return (t + 1, h, c, hs.write(t, h), cs.write(t, c),
                    gates.write(t, tf.concat([i, f, g, o], -1)))

        _, h, c, hs, cs, gates = tf.while_loop(
            lambda t, *_: t < steps, step,
            (0, h0, c0, _arrays(dtype, steps), _arrays(dtype, steps), _arrays(dtype, steps)))
        hs, cs, gates = hs.stack(), cs.stack(), gates.stack()

        def grad(d_hs, d_h, d_c):
            d_hs, d_h, d_c = _defaults((d_hs, d_h, d_c), (hs, h, c))
            h_prev = tf.concat([h0[None], hs[:-1]], 0)
            c_prev = tf.concat([c0[None], cs[:-1]], 0)

            def back(t, dh, dc, d_zs):
                t = t - 1
                i, f, g, o = tf.split(gates[t], 4, axis=-1)
                dh = dh + d_hs[t]
                tanh_c = tf.tanh(cs[t])
                dc = dc + dh * o * (1 - tanh_c * tanh_c)
                dz = tf.concat([dc * g * i * (1 - i), dc * c_prev[t] * f * (1 - f),
                                dc * i * (1 - g * g), dh * tanh_c * o * (1 - o)], -1)
                return (t, tf.matmul(dz, recurrent_kernel, transpose_b=True), dc * f,
                        d_zs.write(t, dz))

            _, dh0, dc0, d_zs = tf.while_loop(lambda t, *_: t > 0, back,
                                              (steps, d_h, d_c, _arrays(dtype, steps)))
            dz = d_zs.stack()
            return dz, dh0, dc0, tf.einsum("tbu,tbk->uk", h_prev, dz)
        return (hs, h, c), grad
    return run(projected, h0, c0, recurrent_kernel)


def gru_sequence(projected, h0, recurrent_kernel, recurrent_bias):
    """GRU (reset_after) over time-major `projected` ([time, batch, 3 × units]: the input's
    product and input bias; Keras' gate order z, r, h) → (every h, last h)."""

    @tf.custom_gradient
    def run(projected, h0, recurrent_kernel, recurrent_bias):
        steps, dtype = tf.shape(projected)[0], projected.dtype

        def step(t, h, hs, saved):
            x_z, x_r, x_h = tf.split(projected[t], 3, axis=-1)
            inner = tf.matmul(h, recurrent_kernel) + recurrent_bias
            h_z, h_r, h_h = tf.split(inner, 3, axis=-1)
            z, r = tf.sigmoid(x_z + h_z), tf.sigmoid(x_r + h_r)
            candidate = tf.tanh(x_h + r * h_h)
            h = z * h + (1 - z) * candidate
            return t + 1, h, hs.write(t, h), saved.write(t, tf.concat([z, r, candidate, h_h], -1))

        _, h, hs, saved = tf.while_loop(
            lambda t, *_: t < steps, step,
            (0, h0, _arrays(dtype, steps), _arrays(dtype, steps)))
        hs, saved = hs.stack(), saved.stack()

        def grad(d_hs, d_h):
            d_hs, d_h = _defaults((d_hs, d_h), (hs, h))
            h_prev = tf.concat([h0[None], hs[:-1]], 0)

            def back(t, dh, d_projected, d_inner):
                t = t - 1
                z, r, candidate, h_h = tf.split(saved[t], 4, axis=-1)
                dh = dh + d_hs[t]
                d_z = dh * (h_prev[t] - candidate) * z * (1 - z)
                d_x_h = dh * (1 - z) * (1 - candidate * candidate)
                d_r = d_x_h * h_h * r * (1 - r)
                inner = tf.concat([d_z, d_r, d_x_h * r], -1)
                dh = dh * z + tf.matmul(inner, recurrent_kernel, transpose_b=True)
                return (t, dh, d_projected.write(t, tf.concat([d_z, d_r, d_x_h], -1)),
                        d_inner.write(t, inner))

            _, dh0, d_projected, d_inner = tf.while_loop(
                lambda t, *_: t > 0, back,
                (steps, d_h, _arrays(dtype, steps), _arrays(dtype, steps)))
            d_inner = d_inner.stack()
            return (d_projected.stack(), dh0, tf.einsum("tbu,tbk->uk", h_prev, d_inner),
                    tf.reduce_sum(d_inner, [0, 1]))
        return (hs, h), grad
    return run(projected, h0, recurrent_kernel, recurrent_bias)


def _named(activation, name: str) -> bool:
    return getattr(activation, "__name__", None) == name


class _WrittenOut:
    """The shared call; a subclass gives `_run(time-major inputs, initial states)` →
    (time-major outputs, last states)."""

    def _written_out(self, mask) -> bool:
        cell = self.cell
        return (mask is None and cell.use_bias and not self.go_backwards
                and not self.time_major and not self.unroll and not self.stateful
                and cell.dropout == 0 and cell.recurrent_dropout == 0
                and _named(cell.activation, "tanh")
                and _named(cell.recurrent_activation, "sigmoid")
                and not tf.config.list_logical_devices("GPU"))

    def call(self, inputs, mask=None, training=None, initial_state=None):
        if isinstance(inputs, list):  # the functional API passes initial states this way
            inputs, initial_state = inputs[0], inputs[1:]
        if isinstance(inputs, tf.RaggedTensor) or not self._written_out(mask):
            return super().call(inputs, mask=mask, training=training,
                                initial_state=initial_state or None)
        if not initial_state:
            initial_state = self.get_initial_state(inputs)
        # Time-major before the product: the loops read one position at a time, and the
        # inputs are the narrower tensor to transpose.
        outputs, states = self._run(tf.transpose(inputs, [1, 0, 2]), list(initial_state))
        output = tf.transpose(outputs, [1, 0, 2]) if self.return_sequences else states[0]
        return [output] + states if self.return_state else output


@tf_keras.saving.register_keras_serializable(package="textgen")
class LSTM(_WrittenOut, tf_keras.layers.LSTM):
    """tf_keras.layers.LSTM, trained with one matrix product a step on a CPU."""

    def _run(self, inputs, states):
        cell = self.cell
        projected = tf.einsum("tbd,dk->tbk", inputs, _read(cell.kernel)) + _read(cell.bias)
        hs, h, c = lstm_sequence(projected, states[0], states[1], _read(cell.recurrent_kernel))
        return hs, [h, c]


@tf_keras.saving.register_keras_serializable(package="textgen")
class GRU(_WrittenOut, tf_keras.layers.GRU):
    """tf_keras.layers.GRU (reset_after), trained with one matrix product a step on a CPU."""

    def _written_out(self, mask) -> bool:
        # reset_after=False resets the state before its product: not the step above.
        return self.cell.reset_after and super()._written_out(mask)

    def _run(self, inputs, states):
        cell = self.cell
        input_bias, recurrent_bias = tf.unstack(_read(cell.bias))
        projected = tf.einsum("tbd,dk->tbk", inputs, _read(cell.kernel)) + input_bias
        hs, h = gru_sequence(projected, states[0], _read(cell.recurrent_kernel), recurrent_bias)
        return hs, [h]
