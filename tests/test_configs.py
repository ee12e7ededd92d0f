"""One config object: defaults < file < flags, and errors that name the setting."""
import pytest

from pipeline import cli, configs
from pipeline.configs import ConfigError


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
    args = cli.build_parser().parse_args(
        ["run", "--epochs", "2", "--cell", "lstm", "--max-perplexity", "9.5",
         "--beam-arg=--direct_num_workers=2"])
    config = cli.config_from_args(args)
    assert config.train.epochs == 2 and config.model.cell == "lstm"
    assert config.eval.max_perplexity == 9.5
    assert config.run.beam_args == ["--direct_num_workers=2"]


def test_cli_bad_input_exits_2_before_any_work(tmp_path, capsys):
    assert cli.main(["run", "--data", str(tmp_path / "none.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["run", "--data", str(tmp_path), "--epochs", "-1"]) == 2
    assert "--epochs" in capsys.readouterr().err
