"""The Trainer: precision choice, early stopping, the best epoch across a resume, presets."""
import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from conftest import build_tiny_model
from models import callbacks, features, model, precision, trainer
from models.settings import TrainSettings
from pipeline import configs

AMX = ("fpu", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
AVX512_BF16 = ("fpu", "avx2", "avx512f", "avx512_bf16")
AVX2 = ("fpu", "avx", "avx2", "fma")


@pytest.mark.parametrize("flags, gpus, expected", [
    (AMX, (), "mixed_bfloat16"),
    (AVX512_BF16, (), "mixed_bfloat16"),
    (AVX2, (), "float32"),
    (("avx2", "amx_bf16"), (), "mixed_bfloat16"),
    (AVX2, ((8, 0),), "mixed_float16"),
    (AVX2, ((7, 5), (8, 6)), "mixed_float16"),
    (AMX, ((6, 1),), "float32"),  # a Pascal GPU trains in float32, whatever the CPU
])
def test_auto_precision_follows_the_hardware(flags, gpus, expected):
    policy, why = precision.choose("auto", flags=flags, gpus=gpus, onednn=True)
    assert policy == expected
    assert why.startswith("auto:")


def test_native_bf16_without_onednn_is_float32_and_explicit_values_win():
    assert precision.choose("auto", flags=AMX, gpus=(), onednn=False)[0] == "float32"
    assert precision.choose("float32", flags=AMX, gpus=())[0] == "float32"
    assert precision.choose("mixed_bfloat16", flags=AVX2, gpus=())[0] == "mixed_bfloat16"


@pytest.mark.parametrize("flags, environ, expected", [
    (AVX2, {}, False),  # TensorFlow's own rule: off without VNNI, BF16 or AMX
    (AVX2, {"TF_ENABLE_ONEDNN_OPTS": "1"}, True),  # what training processes set there
    (AMX, {}, True),
    (AVX512_BF16 + ("avx512_vnni",), {"TF_ENABLE_ONEDNN_OPTS": "0"}, False),
    (("avx2", "avx_vnni"), {"TF_ENABLE_ONEDNN_OPTS": "true"}, True),
])
def test_onednn_follows_the_variable_else_tensorflows_rule(flags, environ, expected):
    assert precision.onednn_on(flags, environ) is expected


def test_the_float32_reason_says_whether_onednn_runs():
    assert precision.choose("auto", flags=AVX2, gpus=(), onednn=True)[1].endswith("oneDNN on")
    assert precision.choose("auto", flags=AVX2, gpus=(), onednn=False)[1].endswith("oneDNN off")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\n")
    assert precision.cpu_flags(str(cpuinfo)) == ("fpu", "avx2", "avx512_bf16")
    assert precision.cpu_flags(str(tmp_path / "missing")) == ()


def _callbacks(state_dir, report_dir, patience=2, factor=0.5):
    es = tf_keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                          restore_best_weights=True)
    rlr = tf_keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=factor, patience=1)
    record = callbacks.TrainingRecord(str(state_dir), str(report_dir), es, rlr)
    return es, rlr, record


def _drive(m, callbacks, epochs, losses, weights_of):
    """What fit does around each epoch: the callbacks in order, given val losses."""
    cbs = tf_keras.callbacks.CallbackList(list(callbacks), model=m, epochs=max(epochs) + 1)
    cbs.on_train_begin()
    for epoch, val_loss in zip(epochs, losses):
        cbs.on_epoch_begin(epoch)
        m.set_weights(weights_of(epoch))
        cbs.on_epoch_end(epoch, {"loss": val_loss + 0.1, "val_loss": val_loss,
                                 "val_perplexity": float(np.exp(val_loss))})
        if m.stop_training:
            break
    cbs.on_train_end()


def _killed_after(m, callbacks, losses, weights_of):
    """Epochs as fit runs them, then a kill: no on_train_end."""
    cbs = tf_keras.callbacks.CallbackList(list(callbacks), model=m, epochs=len(losses) + 10)
    cbs.on_train_begin()
    for epoch, val_loss in enumerate(losses):
        cbs.on_epoch_begin(epoch)
        m.set_weights(weights_of(epoch))
        cbs.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss, "val_perplexity": 1.0})


def _weights_of(template):
    return lambda epoch: [np.full_like(w, epoch + 1) for w in template]


def _repeating_text(cycle=(2, 3, 4, 5, 6, 7)):
    """8 records of one repeating pattern, in batches of 4: a tiny model learns it in a few
    steps, and the same every time (no shuffling)."""
    ids = tf.constant([list(cycle) * 2] * 8, tf.int64)
    return tf.data.Dataset.from_tensor_slices(ids).batch(4).map(model.to_inputs_and_targets)


def _compiled():
    return model.compile_model(build_tiny_model(), learning_rate=0.01)


def test_early_stopping_stops_and_restores_the_best_epoch(tmp_path):
    m = _compiled()
    es, _, record = _callbacks(tmp_path / "state", tmp_path / "report", patience=2)
    _drive(m, [es, record], range(10), [3.0, 2.0, 1.5, 1.7, 1.6, 1.2, 1.1],
           _weights_of(m.get_weights()))
    # Epoch 3 (1.5) is best; epochs 4 and 5 do not beat it: stop after epoch 5.
    assert es.stopped_epoch == 4
    assert all((w == 3).all() for w in m.get_weights())
    with open(tmp_path / "report" / features.TRAINING_REPORT) as f:
        report = json.load(f)
    assert report["epochs_run"] == 5 and report["exported_epoch"] == 3
    assert report["best_eval_loss"] == pytest.approx(1.5)
    assert "early stopping" in report["stopped"]
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3, 4, 5]


def test_the_best_epoch_survives_an_interruption(tmp_path):
    m = _compiled()
    weights_of = _weights_of(m.get_weights())
    _killed_after(m, _callbacks(tmp_path / "state", tmp_path / "report1", patience=3),
                  [3.0, 1.0, 2.0], weights_of)  # best: epoch 2; then a plateau
    lr_after_plateau = float(m.optimizer.learning_rate.numpy())
    # Killed here: no on_train_end. A new process builds new callbacks and a new model;
    # BackupAndRestore would bring back the last epoch's weights and optimizer.
    m2 = _compiled()
    m2.set_weights(weights_of(2))
    m2.optimizer.learning_rate.assign(lr_after_plateau)
    es2, rlr2, record2 = _callbacks(tmp_path / "state", tmp_path / "report2", patience=3)
    _drive(m2, [es2, rlr2, record2], range(3, 10), [2.5, 1.5, 3.0], weights_of)
    # Epoch 2 of the first process is still the best of the whole run, counted across the
    # kill: 3 epochs without improvement (3, 4, 5) → stop after epoch 5 (index 4).
    assert es2.stopped_epoch == 4
    assert all((w == 2).all() for w in m2.get_weights())
    with open(tmp_path / "report2" / features.TRAINING_REPORT) as f:
        report = json.load(f)
    assert report["exported_epoch"] == 2
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3, 4, 5]
    # The plateau counter carried over too: epochs 3 and 4 both failed to improve.
    assert rlr2.wait == 0 and float(m2.optimizer.learning_rate.numpy()) < lr_after_plateau
    assert not os.path.exists(tmp_path / "state"), "a finished run leaves no state to resume"


class _WeightsEachEpoch(tf_keras.callbacks.Callback):
    """The weights each epoch trained, as it ends (before EarlyStopping sees it)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def test_fit_trains_stops_early_and_keeps_an_epoch_before_the_last(tmp_path):
    # Evaluated on the same characters cycling the other way: the eval loss falls while the
    # model learns which characters occur (epochs 1-2), then rises as it learns their order.
    train_ds, eval_ds = _repeating_text(), _repeating_text(cycle=(2, 7, 6, 5, 4, 3))
    m = model.compile_model(build_tiny_model(), learning_rate=0.05)
    settings = TrainSettings(epochs=6, learning_rate=0.05, patience=2, lr_factor=0.5)
    seen = _WeightsEachEpoch()
    record = trainer.fit(m, train_ds, eval_ds, settings, str(tmp_path / "backup"),
                         str(tmp_path / "run"), extra_callbacks=[seen])
    losses = [e["val_loss"] for e in record["epochs"]]
    best = int(np.argmin(losses))
    assert record["stopped"].startswith("early stopping")
    assert record["epochs_run"] == len(losses) == best + 1 + settings.patience < settings.epochs
    assert record["exported_epoch"] == best + 1 < record["epochs_run"]
    assert losses[-1] > losses[best] + 0.1 and losses[best] < losses[0]
    # The model left for the export holds the best epoch's weights, not the last's...
    assert all((now == then).all() for now, then in zip(m.get_weights(), seen.weights[best]))
    assert any((now != then).any() for now, then in zip(m.get_weights(), seen.weights[-1]))
    # ...and evaluating it gives that epoch's loss.
    assert m.evaluate(eval_ds, verbose=0)[0] == pytest.approx(losses[best], rel=1e-4)


def test_with_a_moving_average_the_epochs_are_judged_and_exported_by_the_average(tmp_path):
    ds = _repeating_text()
    runs = {}
    for momentum in (0.0, 0.8):
        settings = TrainSettings(epochs=3, learning_rate=0.05, patience=0, ema_momentum=momentum)
        tf_keras.utils.set_random_seed(7)
        m = model.compile_model(build_tiny_model(seed=3), settings.learning_rate,
                                ema_momentum=momentum)
        record = trainer.fit(m, ds, ds, settings, str(tmp_path / f"backup{momentum}"),
                             str(tmp_path / f"run{momentum}"))
        runs[momentum] = (m, record["epochs"])
    (_, plain_epochs), (averaged, averaged_epochs) = runs[0.0], runs[0.8]
    # Training goes on from the weights themselves: the same steps, the same train loss.
    assert [e["loss"] for e in averaged_epochs] == \
        pytest.approx([e["loss"] for e in plain_epochs], rel=1e-5)
    # Each evaluation is of the average, which lags the weights.
    for with_average, without in zip(averaged_epochs, plain_epochs):
        assert abs(with_average["val_loss"] - without["val_loss"]) > 1e-3
    # The model left for export holds the average of the best epoch: the loss it was judged by.
    best = min(e["val_loss"] for e in averaged_epochs)
    assert averaged.evaluate(ds, verbose=0)[0] == pytest.approx(best, rel=1e-4)


def test_the_moving_average_survives_an_interruption(tmp_path):
    ds = _repeating_text()
    settings = TrainSettings(epochs=4, learning_rate=0.05, patience=0, ema_momentum=0.8)

    def compiled():
        return model.compile_model(build_tiny_model(seed=3), settings.learning_rate,
                                   ema_momentum=settings.ema_momentum)

    whole = trainer.fit(compiled(), ds, ds, settings, str(tmp_path / "b1"), str(tmp_path / "r1"))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(compiled(), ds, ds, settings, str(tmp_path / "b2"), str(tmp_path / "r2"),
                    extra_callbacks=[_Interrupt(at=2)])
    resumed = trainer.fit(compiled(), ds, ds, settings, str(tmp_path / "b2"),
                          str(tmp_path / "r3"))
    # BackupAndRestore brought back the weights and the optimizer's average: the resumed
    # epochs are evaluated exactly as in the run that was never interrupted.
    assert [e["val_loss"] for e in resumed["epochs"]] == \
        pytest.approx([e["val_loss"] for e in whole["epochs"]], rel=1e-5)


class _Interrupt(tf_keras.callbacks.Callback):
    """Stands for a kill: raises as epoch `at` begins (the epochs before it are saved)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def test_the_cosine_schedule_decays_over_the_budget_and_resumes_on_its_curve(tmp_path):
    ds = _repeating_text()
    settings = TrainSettings(epochs=4, learning_rate=0.02, patience=0, lr_schedule="cosine")
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(_compiled(), ds, ds, settings, backup, str(tmp_path / "run1"),
                    extra_callbacks=[_Interrupt(at=2)])
    record = trainer.fit(_compiled(), ds, ds, settings, backup, str(tmp_path / "run2"))
    rates = [e["learning_rate"] for e in record["epochs"]]
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3, 4]
    # The same curve before and after the interruption: a function of the epoch alone.
    expected = [_cosine(0.02, e, 4) for e in range(4)]
    assert rates == pytest.approx(expected, rel=1e-5)
    assert rates[0] > 0.9 * 0.02 and rates[-1] < 0.05 * 0.02


def test_an_unknown_schedule_is_refused_with_the_choices():
    with pytest.raises(configs.ConfigError, match="lr_schedule.*plateau.*cosine"):
        configs.load(overrides={"train": {"lr_schedule": "linear"}})


def test_presets_parse_and_the_tutorial_preset_is_the_tutorial():
    for name in configs.presets():
        configs.load(preset=name)
    tutorial = configs.load(preset="tutorial")
    assert (tutorial.model.cell, tutorial.model.rnn_units, tutorial.model.dropout) == \
        ("gru", 1024, 0.0)
    assert (tutorial.train.batch_size, tutorial.train.learning_rate, tutorial.train.epochs,
            tutorial.train.precision, tutorial.train.patience) == (64, 1e-3, 20, "float32", 0)
    fast = configs.load(preset="fast")
    assert (fast.model.cell, fast.model.rnn_units, fast.train.learning_rate) == \
        ("gru", 768, 3e-3)
    # `default` is the built-in defaults, whatever the machine.
    assert configs.load(preset="default") == configs.Config()
    # Flags still win over a preset.
    assert configs.load(overrides={"train": {"epochs": 2}}, preset="tutorial").train.epochs == 2
    with pytest.raises(configs.ConfigError, match="preset 'nope'"):
        configs.load(preset="nope")


def test_backup_dir_is_stable_across_executions_of_the_same_training(tmp_path):
    class Args:
        custom_config = {"train": {"epochs": 3}}
        transform_output = "/root/Transform/transform_graph/5"
        train_files = ["/root/Transform/transformed_examples/5/Split-train/*"]
        model_run_dir = str(tmp_path / "Trainer" / "model_run" / "7")

    first = trainer.backup_dir(Args)
    Args.model_run_dir = str(tmp_path / "Trainer" / "model_run" / "12")
    assert trainer.backup_dir(Args) == first
    assert first.startswith(str(tmp_path / "Trainer" / "backup"))
    Args.custom_config = {"train": {"epochs": 4}}
    assert trainer.backup_dir(Args) != first


def test_an_epoch_run_again_after_a_kill_is_recorded_once(tmp_path):
    # Killed after this callback saved epoch 3 but before BackupAndRestore did: the resumed
    # run starts at epoch 3 again, and its history must not hold epoch 3 twice.
    m = _compiled()
    weights_of = _weights_of(m.get_weights())
    _killed_after(m, _callbacks(tmp_path / "state", tmp_path / "report1", patience=5),
                  [3.0, 2.0, 1.5], weights_of)
    es2, rlr2, record2 = _callbacks(tmp_path / "state", tmp_path / "report2", patience=5)
    _drive(m, [es2, rlr2, record2], range(2, 4), [1.6, 1.4], weights_of)
    with open(tmp_path / "report2" / features.TRAINING_REPORT) as f:
        report = json.load(f)
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3, 4]
    assert [e["val_loss"] for e in report["epochs"]][2:] == [1.6, 1.4]
    assert report["stopped"] == "reached train.epochs = 4"


def test_a_stop_by_another_callback_is_not_reported_as_the_epoch_limit(tmp_path):
    m = _compiled()
    es, _, record = _callbacks(tmp_path / "state", tmp_path / "report", patience=5)

    class StopAfterTheSecondEpoch(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    _drive(m, [StopAfterTheSecondEpoch(), es, record], range(10), [3.0, 2.0, 1.5],
           _weights_of(m.get_weights()))
    with open(tmp_path / "report" / features.TRAINING_REPORT) as f:
        report = json.load(f)
    assert report["epochs_run"] == 2 and report["exported_epoch"] == 2
    assert report["stopped"] == "stopped by another callback"


class _TenCpuMinutesAnEpoch:
    """process_time as TrainingRecord reads it, at each epoch's begin and end: every epoch
    costs 10 CPU-minutes."""

    def __init__(self):
        self.now = 0.0

    def process_time(self):
        self.now += 600.0
        return self.now

    perf_counter = staticmethod(time.perf_counter)


def _budget_record(state_dir, report_dir, budget):
    es = tf_keras.callbacks.EarlyStopping(monitor="val_loss", patience=5,
                                          restore_best_weights=True)
    return es, callbacks.TrainingRecord(str(state_dir), str(report_dir), es,
                                        cpu_budget_minutes=budget)


def test_a_cpu_budget_stops_before_an_epoch_that_would_not_fit(tmp_path, monkeypatch):
    monkeypatch.setattr(callbacks, "time", _TenCpuMinutesAnEpoch())
    m = _compiled()
    es, record = _budget_record(tmp_path / "state", tmp_path / "report", budget=35)
    _drive(m, [es, record], range(10), [3.0, 2.0, 2.5, 1.0, 0.5],
           _weights_of(m.get_weights()))
    # 30 CPU-min after epoch 3: a fourth (another 10) would pass 35.
    with open(tmp_path / "report" / features.TRAINING_REPORT) as f:
        report = json.load(f)
    assert report["epochs_run"] == 3 and report["exported_epoch"] == 2
    assert report["cpu_seconds"] == pytest.approx(30 * 60)
    assert report["stopped"].startswith("CPU budget: 30.0 CPU-min spent of "
                                        "train.max_cpu_minutes = 35")
    assert all((w == 2).all() for w in m.get_weights())


def test_the_cpu_budget_counts_the_epochs_before_a_kill(tmp_path, monkeypatch):
    monkeypatch.setattr(callbacks, "time", _TenCpuMinutesAnEpoch())
    m = _compiled()
    weights_of = _weights_of(m.get_weights())
    _killed_after(m, _budget_record(tmp_path / "state", tmp_path / "report1", budget=45),
                  [3.0, 2.0], weights_of)
    es, record = _budget_record(tmp_path / "state", tmp_path / "report2", budget=45)
    _drive(m, [es, record], range(2, 10), [1.5, 1.4, 1.3], weights_of)
    # 20 CPU-min before the kill, 20 after: a fifth epoch would pass 45.
    with open(tmp_path / "report2" / features.TRAINING_REPORT) as f:
        report = json.load(f)
    assert report["epochs_run"] == 4 and "CPU budget: 40.0" in report["stopped"]


def test_without_a_budget_or_within_it_training_runs_every_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr(callbacks, "time", _TenCpuMinutesAnEpoch())
    m = _compiled()
    for budget, name in ((0, "none"), (50, "fits")):
        es, record = _budget_record(tmp_path / name, tmp_path / f"report-{name}", budget)
        _drive(m, [es, record], range(5), [3.0, 2.0, 1.5, 1.4, 1.3],
               _weights_of(m.get_weights()))
        with open(tmp_path / f"report-{name}" / features.TRAINING_REPORT) as f:
            report = json.load(f)
        assert report["epochs_run"] == 5 and report["stopped"] == "reached train.epochs = 5"


def _cosine(peak, epoch, epochs):
    return peak * 0.5 * (1 + np.cos(np.pi * (epoch + 0.5) / epochs))


def test_cosine_budget_decays_over_the_epochs_the_budget_holds_and_resumes_on_its_curve(
        tmp_path, monkeypatch):
    monkeypatch.setattr(callbacks, "time", _TenCpuMinutesAnEpoch())
    ds = _repeating_text()
    # 20 epochs allowed, but 45 CPU-min at 10 an epoch hold 4.
    settings = TrainSettings(epochs=20, learning_rate=0.02, patience=0,
                             lr_schedule="cosine_budget", max_cpu_minutes=45)
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(_compiled(), ds, ds, settings, backup, str(tmp_path / "run1"),
                    extra_callbacks=[_Interrupt(at=2)])
    record = trainer.fit(_compiled(), ds, ds, settings, backup, str(tmp_path / "run2"))
    assert record["epochs_run"] == 4 and record["stopped"].startswith("CPU budget: 40.0")
    assert [e.get("budget_epochs") for e in record["epochs"]] == [4, 4, 4, 4]
    rates = [e["learning_rate"] for e in record["epochs"]]
    # The first epoch, before any cost is known, on the curve over train.epochs; then on
    # the curve over the 4 the budget holds, ending near zero with the run — the same
    # after the interruption as before it.
    expected = [_cosine(0.02, 0, 20), *[_cosine(0.02, e, 4) for e in (1, 2, 3)]]
    assert rates == pytest.approx(expected, rel=1e-5)
    assert rates[-1] < 0.05 * 0.02


def test_cosine_over_train_epochs_ignores_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(callbacks, "time", _TenCpuMinutesAnEpoch())
    ds = _repeating_text()
    settings = TrainSettings(epochs=8, learning_rate=0.02, patience=0, lr_schedule="cosine",
                             max_cpu_minutes=25)
    record = trainer.fit(_compiled(), ds, ds, settings, str(tmp_path / "backup"),
                         str(tmp_path / "run"))
    assert [e["learning_rate"] for e in record["epochs"]] == pytest.approx(
        [_cosine(0.02, e, 8) for e in (0, 1)], rel=1e-5)


def test_the_cooldown_anneals_the_last_epochs_the_budget_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(callbacks, "time", _TenCpuMinutesAnEpoch())
    ds = _repeating_text()
    # A cosine over 20 epochs; 45 CPU-min at 10 an epoch hold 4, the last 2 cooled down.
    settings = TrainSettings(epochs=20, learning_rate=0.02, patience=0, lr_schedule="cosine",
                             max_cpu_minutes=45, cooldown_epochs=2)
    record = trainer.fit(_compiled(), ds, ds, settings, str(tmp_path / "backup"),
                         str(tmp_path / "run"))
    assert record["epochs_run"] == 4
    rates = [e["learning_rate"] for e in record["epochs"]]
    cosine = [_cosine(0.02, e, 20) for e in range(4)]
    assert rates == pytest.approx([cosine[0], cosine[1], cosine[2] * 2 / 3, cosine[3] / 3],
                                  rel=1e-5)


def test_a_cooldown_needs_a_cosine_schedule():
    with pytest.raises(configs.ConfigError, match="cooldown_epochs.*plateau.*cosine"):
        configs.load(overrides={"train": {"lr_schedule": "plateau", "cooldown_epochs": 2}})
    with pytest.raises(configs.ConfigError, match="cooldown_epochs.*>= 0"):
        configs.load(overrides={"train": {"lr_schedule": "cosine", "cooldown_epochs": -1}})


def test_cosine_budget_without_a_budget_is_refused_naming_the_setting():
    with pytest.raises(configs.ConfigError,
                       match="lr_schedule.*cosine_budget.*max_cpu_minutes"):
        configs.load(overrides={"train": {"lr_schedule": "cosine_budget",
                                          "max_cpu_minutes": 0}})
    assert configs.load(overrides={"train": {"lr_schedule": "cosine_budget",
                                             "max_cpu_minutes": 60}}) is not None


def test_fit_holds_to_the_cpu_budget(tmp_path):
    m = _compiled()
    ds = _repeating_text()
    # Any epoch costs more than a nanosecond of CPU: the first leaves no room for another.
    settings = TrainSettings(epochs=4, learning_rate=0.05, max_cpu_minutes=1e-9)
    record = trainer.fit(m, ds, ds, settings, str(tmp_path / "backup"), str(tmp_path / "run"))
    assert record["epochs_run"] == 1 and record["stopped"].startswith("CPU budget")


def test_removing_a_backup_another_worker_is_emptying_is_not_an_error(tmp_path, monkeypatch):
    backup = tmp_path / "backup"
    (backup / "best-worker-1").mkdir(parents=True)
    (backup / "best-worker-1" / "best_weights.npz").write_bytes(b"x")
    real_rmtree = tf.io.gfile.rmtree
    calls = []

    def rmtree_racing_a_worker(path):
        calls.append(path)
        if len(calls) == 1:  # the worker deletes its file under the chief's walk
            os.remove(backup / "best-worker-1" / "best_weights.npz")
            raise tf.errors.NotFoundError(None, None, "best_weights.npz: No such file")
        real_rmtree(path)

    monkeypatch.setattr(tf.io.gfile, "rmtree", rmtree_racing_a_worker)
    callbacks.remove_tree(str(backup))
    assert not backup.exists()
    assert len(calls) == 2
    callbacks.remove_tree(str(backup))  # already gone: nothing to do
    assert len(calls) == 2
