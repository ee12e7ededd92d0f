"""The pipeline's subcommands of `textgen` (textgen_cli.py): run, runs, compile. They
parse arguments and print; the work is elsewhere (pipeline/orchestrators/).

Nothing here imports TensorFlow or TFX at module level, so `--help` and bad input
answer at once; the heavy imports happen only once a run is about to start.
"""
import argparse
import functools
import os
import sys
from typing import Optional

from components.text_records import CorpusError
from models.settings import CELLS, DEFAULT_SAMPLING, PRECISIONS
from pipeline import configs
from pipeline.errors import EXIT_BUSY, EXIT_FAILED, CliError

# flag → (section, setting, type); the one mapping between flags and the config object.
RUN_FLAGS = {
    "--data": ("data", "path", str),
    "--mode": ("data", "mode", str),
    "--seq-length": ("data", "seq_length", int),
    "--eval-fraction": ("data", "eval_fraction", float),
    "--encoding-errors": ("data", "encoding_errors", str),
    "--span-count": ("data", "span_count", int),
    "--embedding-dim": ("model", "embedding_dim", int),
    "--rnn-units": ("model", "rnn_units", int),
    "--rnn-layers": ("model", "rnn_layers", int),
    "--cell": ("model", "cell", str),
    "--dropout": ("model", "dropout", float),
    "--weight-drop": ("model", "weight_drop", float),
    "--epochs": ("train", "epochs", int),
    "--steps-per-epoch": ("train", "steps_per_epoch", int),
    "--eval-steps": ("train", "eval_steps", int),
    "--batch-size": ("train", "batch_size", int),
    "--learning-rate": ("train", "learning_rate", float),
    "--seed": ("train", "seed", int),
    "--precision": ("train", "precision", str),
    "--clipnorm": ("train", "clipnorm", float),
    "--weight-decay": ("train", "weight_decay", float),
    "--ema-momentum": ("train", "ema_momentum", float),
    "--patience": ("train", "patience", int),
    "--max-cpu-minutes": ("train", "max_cpu_minutes", float),
    "--lr-schedule": ("train", "lr_schedule", str),
    "--cooldown-epochs": ("train", "cooldown_epochs", int),
    "--lr-factor": ("train", "lr_factor", float),
    "--lr-patience": ("train", "lr_patience", int),
    "--warm-start": ("train", "warm_start", bool),
    "--carry-state": ("train", "carry_state", bool),
    "--shift-windows": ("train", "shift_windows", bool),
    "--max-perplexity": ("eval", "max_perplexity", float),
    "--max-regression": ("eval", "max_regression", float),
    "--max-latency-ms": ("infra", "max_latency_ms", float),
    "--pipeline-root": ("run", "pipeline_root", str),
    "--serving-dir": ("run", "serving_dir", str),
    "--sample-chars": ("run", "sample_chars", int),
    "--lock-timeout": ("run", "lock_timeout", float),
}
# What each flag means, in the user's terms and units; the help adds the setting's name
# and its default from configs.py.
FLAG_HELP = {
    "--data": "UTF-8 text to learn from: a file, a directory, a glob, a {SPAN} pattern or an "
              "http(s) URL (default: the tutorial's Shakespeare)",
    "--mode": "stream: windows of seq-length+1 characters of running text; lines: one record "
              "per line (names, titles)",
    "--seq-length": "characters the model reads per training sequence (stream mode)",
    "--eval-fraction": "fraction (0-1) of each file's end held out as the eval split",
    "--encoding-errors": "strict: refuse bytes that are not UTF-8; replace: read them as U+FFFD",
    "--span-count": "with a {SPAN} pattern, read this many latest spans (1 = the latest only)",
    "--embedding-dim": "size of each character's embedding vector",
    "--rnn-units": "units (state size) of each recurrent layer",
    "--rnn-layers": "number of stacked recurrent layers",
    "--cell": "recurrent cell",
    "--dropout": "dropout rate (0-1) between layers and before the output",
    "--weight-drop": "DropConnect rate (0-1) on each recurrent layer's hidden-to-hidden "
                     "weights, one mask a training step (0 = off; one replica only)",
    "--epochs": "training epochs at most (early stopping may end sooner)",
    "--steps-per-epoch": "batches per epoch (default: one full pass over the train split)",
    "--eval-steps": "eval batches after each epoch (default: the whole eval split)",
    "--batch-size": "sequences per batch",
    "--learning-rate": "Adam's learning rate",
    "--seed": "random seed of training and of the summary's sample",
    "--precision": "Keras mixed-precision policy; auto: mixed_bfloat16 where the CPU runs bf16 "
                   "natively, mixed_float16 on GPUs, float32 elsewhere",
    "--clipnorm": "Adam's clip of the gradients' global norm (0 = no clipping)",
    "--weight-decay": "AdamW's decoupled weight decay per unit of learning rate (0 = Adam)",
    "--ema-momentum": "evaluate and export the weights' moving average, moved this much less "
                      "than all the way to each step's weights (0 = off)",
    "--patience": "stop after this many epochs without a lower eval loss (0 = run every epoch)",
    "--max-cpu-minutes": "stop before an epoch that would take training past this many "
                         "minutes of CPU time (0 = no budget)",
    "--lr-schedule": "plateau: cut the learning rate when the eval loss stalls; cosine: decay "
                     "it to near zero over --epochs (the run's length is its budget); "
                     "cosine_budget: over the epochs --max-cpu-minutes holds on this CPU, "
                     "at most --epochs",
    "--cooldown-epochs": "cosine schedules: over the run's last N epochs (as --epochs or "
                         "the CPU budget end it) take the rate linearly towards zero",
    "--lr-factor": "plateau schedule: multiply the learning rate by this (0-1] after "
                   "--lr-patience epochs without a lower eval loss (1 = constant)",
    "--lr-patience": "epochs without a lower eval loss before the learning rate drops",
    "--warm-start": "start from the latest blessed model's weights when the vocabulary and "
                    "shape allow",
    "--carry-state": "train on batch-size contiguous streams of the text, each batch's last "
                     "RNN state the first of the next (truncated back-propagation; stream "
                     "mode; evaluation still starts each record from zero)",
    "--shift-windows": "cut the text into windows anew each epoch, from a random offset "
                       "(stream mode; lines are read whole, and --carry-state reads streams)",
    "--max-perplexity": "bless only a model whose eval perplexity (per character) is at most "
                        "this (default: the corpus' distinct characters, i.e. uniform guessing)",
    "--max-regression": "bless only a model no worse than the latest blessed one by more than "
                        "this fraction of its perplexity (0.01 = 1%%)",
    "--max-latency-ms": "push only a model whose `generate` of infra.generate_chars characters, "
                        "served in a process of its own, takes at most this many milliseconds "
                        "(median of three; default: no bound)",
    "--pipeline-root": "directory for TFX's artifacts, ML Metadata (SQLite) and the run's log",
    "--serving-dir": "directory the Pusher publishes <version>/ SavedModels to (what `textgen "
                     "serve --model-dir` reads)",
    "--sample-chars": "characters of sample text printed after a push (0 = none)",
    "--lock-timeout": "seconds to wait for another run holding the pipeline root (0 = give up "
                      "at once, exit 75)",
}
CHOICES = {"--mode": configs.MODES, "--cell": CELLS, "--encoding-errors": configs.ENCODING_ERRORS,
           "--precision": PRECISIONS}


def _add_config_flags(p, preset_default: str) -> None:
    choices = configs.presets() + ([configs.AUTO_PRESET] if preset_default == "auto" else [])
    p.add_argument("--preset", choices=choices, default=preset_default,
                   help="a shipped recipe (pipeline/presets/), under --config and flags: "
                   "default = the best model within about 1 CPU-hour where training runs in "
                   "bf16 or on a GPU; fast = past the tutorial's best level in a fraction of "
                   "its time; quality = the best model within about 2 CPU-hours (quality_float32 "
                   "where the CPU trains in float32); tutorial = "
                   "the TensorFlow tutorial's exact model and training"
                   + ("; auto = fast on a CPU (in bf16 where it runs natively), default on a "
                      "GPU" if preset_default == "auto" else "")
                   + f" (default: {preset_default})")
    p.add_argument("--config", help="TOML or YAML file with [data] [model] [train] [eval] [infra] "
                   "[run] [metadata] [vertex] sections (see docs/scheduling.md); flags override it")
    defaults = configs.Config()
    for flag, (section, name, kind) in RUN_FLAGS.items():
        default = getattr(getattr(defaults, section), name)
        shown = "" if default is None else f", default {default}"
        help_text = f"{FLAG_HELP[flag]} ({section}.{name}{shown})"
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
            continue
        metavar = {"--data": "PATH_OR_URL", "--pipeline-root": "DIR", "--serving-dir": "DIR",
                   "--lock-timeout": "SECONDS"}.get(flag, {int: "N", float: "X"}.get(kind))
        p.add_argument(flag, type=kind, default=None, help=help_text,
                       choices=CHOICES.get(flag), metavar=None if flag in CHOICES else metavar)
    p.add_argument("--beam-arg", action="append", default=None, metavar="ARG",
                   help="Beam pipeline argument, after the config's run.beam_args, e.g. "
                   "--beam-arg=--direct_running_mode=multi_processing "
                   "--beam-arg=--direct_num_workers=2")


def _add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="run the pipeline: text → model → blessing → push",
                       description="Runs the TFX pipeline (LocalDagRunner; Beam runner from "
                       "the Beam arguments). Settings: defaults < --config file (TOML/YAML) < "
                       "flags. One run at a time per pipeline root. Exit codes: 0 ran (blessed "
                       "or not), 1 the run failed, 2 bad input, 75 another run holds the "
                       "pipeline root.")
    _add_config_flags(p, configs.AUTO_PRESET)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show TFX, Beam and TensorFlow output on the terminal too (by default "
                   "it goes to <pipeline root>/textgen.log)")
    p.set_defaults(func=cmd_run)


def _add_runs_parser(sub) -> None:
    p = sub.add_parser("runs", help="list past runs from ML Metadata",
                       description="Past runs, oldest first: start time, span, whether the "
                       "Trainer ran, eval perplexity of the candidate and of the baseline, "
                       "blessed, the version pushed, the baseline's version.")
    p.add_argument("--pipeline-root", help="default: run.pipeline_root of --config, else "
                   f"{configs.RunSettings().pipeline_root}")
    p.add_argument("--config", help="config file: its pipeline root and [metadata] connection")
    p.add_argument("--last", type=int, default=None, metavar="N", help="only the last N runs")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show ML Metadata's and TensorFlow's INFO lines too")
    p.set_defaults(func=cmd_runs)


def _add_compile_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile the pipeline for an orchestrator",
                       description="Writes a Kubeflow Pipelines v2 / Vertex AI Pipelines "
                       "definition (JSON) with TFX's KubeflowV2DagRunner; no cluster needed. "
                       "Data and roots are usually gs:// URIs in the --config file.")
    p.add_argument("--target", choices=["vertex"], required=True)
    p.add_argument("--output", default="textgen_pipeline.json", help="the JSON file to write")
    p.add_argument("--image", help="container image of the components (vertex.image)")
    # Not `auto`: Vertex AI's trainer is another machine than the one compiling.
    _add_config_flags(p, "default")
    p.set_defaults(func=cmd_compile)


def add_parsers(subparsers) -> None:
    _add_run_parser(subparsers)
    _add_runs_parser(subparsers)
    _add_compile_parser(subparsers)


def _bad_input_is_cli_error(command):
    """A subcommand whose bad settings or corpus (ConfigError, CorpusError) end as the
    command line's CliError: one line, exit code 2."""
    @functools.wraps(command)
    def run(args) -> int:
        try:
            return command(args)
        except (configs.ConfigError, CorpusError) as err:
            raise CliError(str(err)) from None
    return run


def config_from_args(args, preset: Optional[str] = None) -> configs.Config:
    """The config the flags describe; `preset` is args.preset resolved (resolve_preset)."""
    preset = preset or configs.resolve_preset(args.preset)[0]
    overrides = {}
    for flag, (section, name, _) in RUN_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            overrides.setdefault(section, {})[name] = value
    config = configs.load(args.config, overrides, preset=preset)
    if args.beam_arg:
        # Added to the file's arguments rather than replacing them: a config holds the
        # runner's set-up, a flag adjusts one value (Beam takes the last one given).
        config.run.beam_args = list(config.run.beam_args) + args.beam_arg
    return config.validate()


@_bad_input_is_cli_error
def cmd_run(args) -> int:
    import models
    models.train_with_onednn()  # before the imports below load TensorFlow
    from pipeline.lock import LockBusy
    from pipeline.orchestrators import local
    preset = configs.resolve_preset(args.preset)
    config = config_from_args(args, preset[0])
    try:
        result = local.run(config, preset, verbose=args.verbose)
    except LockBusy as err:
        print(f"textgen: {err}", file=sys.stderr)
        return EXIT_BUSY
    except local.RunFailed as err:
        print(f"textgen: the pipeline run failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    from pipeline import summary  # ML Metadata's protos and grpc: not for `--help`
    print(summary.format_summary(result.summary, result.corpus, result.bound,
                                 result.bound_reason, config.eval.max_regression,
                                 result.log_path))
    if result.samples:
        print(f"\nsample from {result.sample_model} (temperature "
              f"{DEFAULT_SAMPLING.temperature:g}):\n" + "-" * 60)
        print("".join(result.samples))  # one sample, or one line per prompt in lines mode
        print("-" * 60)
    print(f"wall time: {result.seconds:.0f} s")
    return 0


@_bad_input_is_cli_error
def cmd_runs(args) -> int:
    from pipeline import logs, runs
    config = configs.load(args.config) if args.config else configs.Config()
    root = os.path.abspath(args.pipeline_root or config.run.pipeline_root)
    try:
        with logs.framework_quiet(args.verbose):
            rows = runs.list_runs(root, config.metadata, config.run.pipeline_name, args.last)
    except (FileNotFoundError, ConnectionError) as err:
        raise CliError(f"{err}; pass --pipeline-root DIR or --config FILE") from None
    print(runs.format_json(rows) if args.json else runs.format_table(rows))
    return 0


@_bad_input_is_cli_error
def cmd_compile(args) -> int:
    # The preset as named: Vertex AI's trainer is another machine than this one, so this
    # CPU must not pick a variant (configs.choose_variant).
    config = config_from_args(args, args.preset)
    if args.image:
        config.vertex.image = args.image
    from pipeline.orchestrators import vertex
    definition = vertex.compile_pipeline(config, args.output)
    tasks = definition["pipelineSpec"]["root"]["dag"]["tasks"]
    print(f"wrote {os.path.abspath(args.output)}: Kubeflow Pipelines v2 definition of "
          f"'{config.run.pipeline_name}' with {len(tasks)} tasks ({', '.join(sorted(tasks))}); "
          f"image {config.vertex.image}")
    return 0

