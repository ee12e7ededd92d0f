"""One config object: defaults < file < flags, and errors that name the setting."""
import sys

import pytest

from pipeline import cli, configs
from pipeline.configs import ConfigError
import textgen_cli


def test_data_defaults_are_the_tutorials():
    c = configs.Config()
    assert c.data.seq_length == 100 and c.data.eval_fraction == 0.1
    # The model's and training's defaults live beside the model, defined once.
    from models import settings
    assert c.model == settings.ModelSettings() and c.train == settings.TrainSettings()


def test_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nrnn_units = 512\ncell = "lstm"\n[train]\nepochs = 3\n')
    config = configs.load(str(path), {"train": {"epochs": 5}})
    assert (config.model.rnn_units, config.model.cell, config.train.epochs) == (512, "lstm", 5)


def test_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  mode: lines\n")
    assert configs.load(str(path)).data.mode == "lines"


@pytest.mark.parametrize("overrides, message", [
    ({"train": {"epochs": 0}}, r"train\.epochs \(--epochs\) = 0: must be a positive integer"),
    ({"data": {"eval_fraction": 1.5}}, r"data\.eval_fraction"),
    ({"data": {"eval_fraction": 0}}, r"data\.eval_fraction"),
    ({"data": {"mode": "words"}}, r"data\.mode"),
    ({"model": {"rnn_units": -3}}, r"model\.rnn_units"),
    ({"model": {"dropout": 1.0}}, r"model\.dropout"),
    ({"train": {"weight_decay": -0.1}},
     r"train\.weight_decay \(--weight-decay\) = -0\.1: must be >= 0"),
    ({"train": {"ema_momentum": 1.0}},
     r"train\.ema_momentum \(--ema-momentum\) = 1\.0: must be in \[0, 1\)"),
    ({"eval": {"max_perplexity": 0.5}}, r"eval\.max_perplexity"),
    ({"train": {"nonsense": 1}}, r"unknown setting train\.nonsense"),
    ({"training": {}}, r"unknown section \[training\]"),
])
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        configs.load(None, overrides)


def test_unreadable_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        configs.load(str(tmp_path / "missing.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        configs.load(str(broken))


def test_cli_flags_map_onto_the_config():
    args = textgen_cli.build_parser().parse_args(
        ["run", "--epochs", "2", "--cell", "lstm", "--max-perplexity", "9.5",
         "--weight-drop", "0.2", "--beam-arg=--direct_num_workers=2"])
    config = cli.config_from_args(args)
    assert config.train.epochs == 2 and config.model.cell == "lstm"
    assert config.model.weight_drop == 0.2
    assert config.eval.max_perplexity == 9.5
    assert config.run.beam_args == ["--direct_num_workers=2"]


def test_cli_bad_input_exits_2_before_any_work(tmp_path, capsys):
    assert textgen_cli.main(["run", "--data", str(tmp_path / "none.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert textgen_cli.main(["run", "--data", str(tmp_path), "--epochs", "-1"]) == 2
    assert "--epochs" in capsys.readouterr().err


@pytest.mark.parametrize("flags, gpu, onednn, preset, policy", [
    (["avx", "avx2", "fma"], False, None, "fast", "float32"),  # bf16 emulated
    (["avx2", "avx512f", "avx512_bf16"], False, None, "fast", "bf16"),
    (["avx2", "amx_bf16", "amx_tile"], False, None, "fast", "bf16"),
    (["avx2", "avx512_bf16"], False, False, "fast", "oneDNN is off"),
    (["avx2", "fma"], True, None, "default", "GPU"),  # the default in mixed precision
])
def test_auto_preset_is_fast_on_every_cpu_and_says_in_which_precision(
        flags, gpu, onednn, preset, policy):
    chosen, why = configs.choose_preset(flags, gpu, onednn)
    assert chosen == preset and why.startswith("auto: ") and policy in why


@pytest.mark.parametrize("flags, gpu, onednn, preset, said", [
    (["avx", "avx2", "fma"], False, None, "quality_float32", "no native bf16"),
    (["avx2", "avx512_bf16"], False, False, "quality_float32", "oneDNN is off"),
    (["avx2", "avx512f", "avx512_bf16"], False, None, "quality", "avx512_bf16"),
    (["avx2", "amx_bf16", "amx_tile"], False, None, "quality", "amx_bf16"),
    (["avx2", "fma"], True, None, "quality", "GPU"),
])
def test_quality_trains_its_float32_variant_where_the_cpu_trains_in_float32(
        flags, gpu, onednn, preset, said):
    chosen, why = configs.choose_variant("quality", flags, gpu, onednn)
    assert chosen == preset and said in why
    # A preset without a variant, and the variant named itself, are taken as given.
    for name in ("fast", "quality_float32"):
        assert configs.choose_variant(name, flags, gpu, onednn) == (name, "set explicitly")


def test_run_takes_the_variant_for_this_cpu_and_compile_the_preset_as_named(
        monkeypatch, tmp_path):
    monkeypatch.setattr(configs, "choose_variant", lambda name: ("quality_float32", "test"))
    run = textgen_cli.build_parser().parse_args(["run", "--preset", "quality"])
    assert cli.config_from_args(run) == configs.load(preset="quality_float32")
    # Vertex AI trains on another machine: `compile` hands it the preset as named (the
    # compiler itself, which imports TFX, replaced by one that keeps the config).
    import types
    from pipeline import orchestrators
    compiled = []
    fake = types.SimpleNamespace(compile_pipeline=lambda config, _: compiled.append(config) or {
        "pipelineSpec": {"root": {"dag": {"tasks": {}}}}})
    monkeypatch.setitem(sys.modules, "pipeline.orchestrators.vertex", fake)
    monkeypatch.setattr(orchestrators, "vertex", fake, raising=False)
    assert textgen_cli.main(["compile", "--target", "vertex", "--preset", "quality",
                             "--output", str(tmp_path / "p.json")]) == 0
    assert compiled == [configs.load(preset="quality")]


def test_a_variant_is_its_base_preset_with_its_own_changes():
    quality, variant = configs.load(preset="quality"), configs.load(preset="quality_float32")
    assert (variant.model.cell, variant.model.rnn_units, variant.model.dropout,
            variant.model.weight_drop) == ("gru", 768, 0.3, 0.0)
    assert (quality.model.cell, quality.model.rnn_units, quality.model.weight_drop) == \
        ("lstm", 1024, 0.2)
    # Everything else is the base's: 2 layers, the budget, the schedule, the average, the
    # windows cut anew.
    assert variant.train.shift_windows and variant.model.rnn_layers == 2
    for name in ("cell", "rnn_units", "dropout", "weight_drop"):
        setattr(variant.model, name, getattr(quality.model, name))
    assert variant == quality


def test_a_preset_built_on_itself_is_refused(tmp_path, monkeypatch):
    for name, text in (("a", 'base = "b"\n'), ("b", 'base = "a"\n'), ("c", "base = 3\n")):
        (tmp_path / f"{name}.toml").write_text(text)
    monkeypatch.setattr(configs, "_preset_files", lambda: tmp_path)
    with pytest.raises(ConfigError, match=r"preset b: base = 'a': must name another preset"):
        configs.load(preset="a")
    with pytest.raises(ConfigError, match=r"preset c: base = 3"):
        configs.load(preset="c")


def test_a_gpu_is_seen_from_the_driver_unless_cuda_visible_devices_hides_it(
        tmp_path, monkeypatch):
    from models import precision
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert not precision.nvidia_gpu_present(str(tmp_path / "no-driver"))
    assert not precision.nvidia_gpu_present(str(tmp_path))  # the driver, but no GPU
    (tmp_path / "0000:00:04.0").mkdir()
    assert precision.nvidia_gpu_present(str(tmp_path))
    for hidden in ("-1", ""):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not precision.nvidia_gpu_present(str(tmp_path))


def test_run_takes_the_auto_preset_under_the_flags_and_compile_the_default(monkeypatch):
    monkeypatch.setattr(configs, "choose_preset", lambda: ("fast", "auto: test"))
    args = textgen_cli.build_parser().parse_args(["run", "--dropout", "0.1"])
    assert args.preset == "auto" and configs.resolve_preset(args.preset) == ("fast", "auto: test")
    config = cli.config_from_args(args)
    assert (config.model.cell, config.model.rnn_units, config.model.dropout) == ("gru", 768, 0.1)
    tutorial = cli.config_from_args(
        textgen_cli.build_parser().parse_args(["run", "--preset", "tutorial"]))
    assert tutorial == configs.load(preset="tutorial")
    compile_args = textgen_cli.build_parser().parse_args(["compile", "--target", "vertex"])
    assert cli.config_from_args(compile_args) == configs.Config()
    with pytest.raises(SystemExit):
        textgen_cli.build_parser().parse_args(["compile", "--target", "vertex", "--preset", "auto"])
