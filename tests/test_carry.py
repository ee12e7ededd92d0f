"""Training with carried state: the streams and the state from step to step."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models import carry, model, trainer
from models.settings import ModelSettings, TrainSettings
from test_trainer import _Interrupt  # a kill as an epoch begins

B, T = 3, 5  # streams (rows of a batch) and characters a step


def test_each_row_goes_on_where_it_stopped_one_step_before():
    text = np.arange(100)  # every character its own id: where it came from is its value
    steps = list(carry.stream_dataset(text, B, T, repeat=False).as_numpy_iterator())
    per_stream = 100 // B
    assert len(steps) == (per_stream - 1) // T
    for row in range(B):
        inputs = np.concatenate([x[row] for x, _ in steps])
        targets = np.concatenate([y[row] for _, y in steps])
        # One stretch of the text, from the stream's start: no character read twice or skipped.
        start = row * per_stream
        assert (inputs == text[start:start + len(inputs)]).all()
        assert (targets == inputs + 1).all()
    assert all(x.shape == y.shape == (B, T) for x, y in steps)


def test_too_little_text_for_the_streams_is_refused_with_what_to_change():
    with pytest.raises(ValueError, match=r"12 characters.*batch_size = 3.*--batch-size"):
        carry.stream_batches(np.arange(12), B, T)


class _Steps(tf_keras.callbacks.Callback):
    """Per training step: the epoch, the weights and the carried state it started from, and
    Keras' running mean of the loss after it."""

    def __init__(self):
        super().__init__()
        self.steps, self.epoch = [], None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.steps.append({"epoch": self.epoch, "batch": batch,
                           "weights": self.model.core.get_weights(),
                           "state": [v.numpy() for v in self.model.carried]})

    def on_train_batch_end(self, batch, logs=None):
        self.steps[-1]["mean_loss"] = logs["loss"]


def _by_hand(core, weights, state, inputs, targets):
    """The step's forward pass, one character at a time through the cells (not the layers
    that trained): (its loss, the last state of every layer)."""
    core.set_weights(weights)
    x = core.get_layer("embedding")(inputs)
    last, offset = [], 0
    for layer in model.rnn_layers_of(core):
        size = len(tf.nest.flatten(layer.cell.state_size))
        states = [tf.constant(s) for s in state[offset:offset + size]]
        offset += size
        outputs = []
        for t in range(inputs.shape[1]):
            out, states = layer.cell(x[:, t], states if size > 1 else states[0])
            states = tf.nest.flatten(states)
            outputs.append(out)
        x = tf.stack(outputs, axis=1)
        last += [s.numpy() for s in states]
    logits = core.get_layer("logits")(x)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
    return float(loss), last


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_state_leaving_a_step_enters_the_next_and_each_epoch_starts_from_zero(tmp_path,
                                                                                   cell):
    rng = np.random.default_rng(2)
    text = rng.integers(2, 12, size=B * (4 * T + 1))  # 4 steps an epoch
    tf_keras.utils.set_random_seed(4)
    core = model.build_model(12, ModelSettings(embedding_dim=6, rnn_units=8, rnn_layers=2,
                                               cell=cell, dropout=0.0), return_state=True)
    # Larger weights than Keras starts from: at its scale the state a step starts from
    # moved the loss by as little as 2e-4, too close to the tolerance to tell apart.
    core.set_weights([3 * w for w in core.get_weights()])
    settings = TrainSettings(epochs=2, batch_size=B, learning_rate=0.05, patience=0,
                             lr_factor=1.0, carry_state=True)
    trained = model.compile_model(carry.CarriedState(core, B), settings.learning_rate)
    dataset = carry.stream_dataset(text, B, T, repeat=False)
    spy = _Steps()
    trainer.fit(trained, dataset, dataset, settings, str(tmp_path / "backup"),
                str(tmp_path / "run"), extra_callbacks=[spy])
    batches = list(dataset.as_numpy_iterator())
    assert len(spy.steps) == 2 * len(batches) == 8
    previous_mean = 0.0
    for step, following in zip(spy.steps, spy.steps[1:] + [None]):
        inputs, targets = batches[step["batch"]]
        if step["batch"] == 0:
            assert all((s == 0).all() for s in step["state"]), "an epoch starts from zero"
            previous_mean = 0.0
        loss, last = _by_hand(core, step["weights"], step["state"], inputs, targets)
        # The loss Keras took the gradient of is the one from the carried state...
        step_loss = (step["batch"] + 1) * step["mean_loss"] - step["batch"] * previous_mean
        previous_mean = step["mean_loss"]
        assert step_loss == pytest.approx(loss, rel=1e-4)
        if step["batch"] > 0:
            from_zero, _ = _by_hand(core, step["weights"], [np.zeros_like(s)
                                                            for s in step["state"]],
                                    inputs, targets)
            assert abs(from_zero - loss) > 1e-2, "a state that changes nothing proves nothing"
        # ...and the state it leaves is the one the next step of the epoch starts from.
        if following is not None and following["epoch"] == step["epoch"]:
            for entering, leaving in zip(following["state"], last):
                np.testing.assert_allclose(entering, leaving, rtol=1e-4, atol=1e-6)
    # What trained is what is exported: the core, with no carried state among its weights.
    assert len(core.weights) == len(trained.weights) - len(trained.carried)


def test_an_interrupted_training_resumes_as_if_never_stopped(tmp_path):
    text = np.random.default_rng(5).integers(2, 12, size=B * (3 * T + 1))
    dataset = carry.stream_dataset(text, B, T, repeat=False)
    settings = TrainSettings(epochs=2, batch_size=B, learning_rate=0.05, patience=0,
                             carry_state=True)

    def trained():
        tf_keras.utils.set_random_seed(6)
        core = model.build_model(12, ModelSettings(embedding_dim=6, rnn_units=8, cell="lstm",
                                                   dropout=0.0), return_state=True)
        return model.compile_model(carry.CarriedState(core, B), settings.learning_rate)

    def fit(backup, run, extra=()):
        return trainer.fit(trained(), dataset, dataset, settings, str(tmp_path / backup),
                           str(tmp_path / run), extra_callbacks=list(extra))

    whole = fit("b1", "r1")
    with pytest.raises(KeyboardInterrupt):
        fit("b2", "r2", [_Interrupt(at=1)])
    resumed = fit("b2", "r3")
    # BackupAndRestore brought back the weights, the optimizer and the carried state's
    # variables; the epoch starts from zero state either way.
    assert [e["loss"] for e in resumed["epochs"]] == \
        pytest.approx([e["loss"] for e in whole["epochs"]], rel=1e-5)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]


def test_the_flag_sets_it_and_lines_mode_or_several_gpus_refuse_it():
    import textgen_cli
    from pipeline import cli, configs
    assert configs.Config().train.carry_state is False
    args = textgen_cli.build_parser().parse_args(["run", "--carry-state"])
    assert cli.config_from_args(args, preset="default").train.carry_state is True
    with pytest.raises(configs.ConfigError, match=r"train.carry_state.*'stream'.*'lines'"):
        configs.load(overrides={"data": {"mode": "lines"}, "train": {"carry_state": True}})
    with pytest.raises(configs.ConfigError, match=r"train.carry_state.*trainer_gpus = 2"):
        configs.load(overrides={"vertex": {"trainer_gpus": 2}, "train": {"carry_state": True}})
    with pytest.raises(configs.ConfigError, match="train.carry_state.*true or false"):
        configs.load(overrides={"train": {"carry_state": "yes"}})
