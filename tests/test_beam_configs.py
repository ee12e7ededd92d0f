"""Beam settings: config + --beam-arg flags, and the ready runner configurations in deploy/beam."""
import glob
import os

import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import cli, configs
import textgen_cli

BEAM_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "deploy", "beam")
RUNNERS = {"direct-multiprocessing.toml": "DirectRunner", "dataflow.toml": "DataflowRunner",
           "flink.toml": "FlinkRunner", "spark.toml": "SparkRunner"}


def test_every_runner_has_a_configuration():
    assert {os.path.basename(p) for p in glob.glob(os.path.join(BEAM_DIR, "*.toml"))} == \
        set(RUNNERS)


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_configuration_loads_and_beam_knows_every_argument(name):
    config = configs.load(os.path.join(BEAM_DIR, name))
    options = PipelineOptions(config.run.beam_args)
    assert options.view_as(StandardOptions).runner == RUNNERS[name]
    # A misspelt option would be dropped by Beam (with only a warning): none is.
    known = options.get_all_options(drop_default=False)
    for arg in config.run.beam_args:
        assert arg.startswith("--"), arg
        assert arg[2:].split("=", 1)[0] in known, f"{name}: Beam has no option {arg}"


def test_flags_come_after_the_config_file(tmp_path):
    path = tmp_path / "multi.toml"
    path.write_text('[run]\nbeam_args = ["--direct_running_mode=multi_processing", '
                    '"--direct_num_workers=2"]\n')
    args = textgen_cli.build_parser().parse_args(["run", "--config", str(path),
                                                  "--beam-arg=--direct_num_workers=4"])
    config = cli.config_from_args(args)
    assert config.run.beam_args == ["--direct_running_mode=multi_processing",
                                    "--direct_num_workers=2", "--direct_num_workers=4"]
    from pipeline import pipeline as pipeline_lib
    final = PipelineOptions(pipeline_lib.beam_args(config)).get_all_options()
    # The defaults come first and lose; the flag comes last and wins.
    assert final["direct_running_mode"] == "multi_processing"
    assert final["direct_num_workers"] == 4 and final["runner"] == "DirectRunner"


def test_beam_args_must_be_a_list_of_strings(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[run]\nbeam_args = "--runner=DirectRunner"\n')
    with pytest.raises(configs.ConfigError, match=r"run\.beam_args"):
        configs.load(str(path))
