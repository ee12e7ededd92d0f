"""`textgen`: the command line. Thin: settings and checks here, the work elsewhere.

Nothing here imports TensorFlow or TFX at module level, so `--help` and bad input
answer at once; the heavy imports happen only once a run is about to start.
"""
import argparse
import logging
import os
import sys
import time
import warnings
from typing import List, Optional

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline import configs  # noqa: E402

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


class CliError(Exception):
    """One line for the user, exit code 2."""


# flag → (section, setting, type); the one mapping between flags and the config object.
RUN_FLAGS = {
    "--data": ("data", "path", str),
    "--mode": ("data", "mode", str),
    "--seq-length": ("data", "seq_length", int),
    "--eval-fraction": ("data", "eval_fraction", float),
    "--encoding-errors": ("data", "encoding_errors", str),
    "--embedding-dim": ("model", "embedding_dim", int),
    "--rnn-units": ("model", "rnn_units", int),
    "--rnn-layers": ("model", "rnn_layers", int),
    "--cell": ("model", "cell", str),
    "--dropout": ("model", "dropout", float),
    "--epochs": ("train", "epochs", int),
    "--steps-per-epoch": ("train", "steps_per_epoch", int),
    "--eval-steps": ("train", "eval_steps", int),
    "--batch-size": ("train", "batch_size", int),
    "--learning-rate": ("train", "learning_rate", float),
    "--seed": ("train", "seed", int),
    "--max-perplexity": ("eval", "max_perplexity", float),
    "--max-regression": ("eval", "max_regression", float),
    "--pipeline-root": ("run", "pipeline_root", str),
    "--serving-dir": ("run", "serving_dir", str),
    "--sample-chars": ("run", "sample_chars", int),
}


def _add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="run the pipeline: text → model → blessing → push",
                       description="Runs the TFX pipeline on the local Beam runner. Settings: "
                       "defaults < --config file (TOML/YAML) < flags.")
    p.add_argument("--config", help="TOML or YAML file with [data] [model] [train] [eval] [run]")
    for flag, (section, name, kind) in RUN_FLAGS.items():
        default = getattr(getattr(configs.Config(), section), name)
        extra = {"choices": ["stream", "lines"]} if flag == "--mode" else \
            {"choices": ["gru", "lstm"]} if flag == "--cell" else \
            {"choices": ["strict", "replace"]} if flag == "--encoding-errors" else {}
        p.add_argument(flag, type=kind, default=None, help=f"{section}.{name} (default {default})",
                       **extra)
    p.add_argument("--beam-arg", action="append", default=None, metavar="ARG",
                   help="extra Beam pipeline argument, e.g. --beam-arg=--direct_num_workers=2")
    p.add_argument("-v", "--verbose", action="store_true", help="TFX/Beam INFO logs too")
    p.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textgen",
        description="Raw text → TFX pipeline → character-level RNN generator served by "
                    "TensorFlow Serving.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    from serving import cli as serving_cli  # `serve` and `generate`; imports no TensorFlow
    serving_cli.add_parsers(sub)
    return parser


def config_from_args(args) -> configs.Config:
    overrides = {}
    for flag, (section, name, _) in RUN_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            overrides.setdefault(section, {})[name] = value
    if args.beam_arg:
        overrides.setdefault("run", {})["beam_args"] = args.beam_arg
    return configs.load(args.config, overrides)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    if not verbose:
        for noisy in ("apache_beam", "tensorflow", "absl", "tfx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def sample_prompts(config: configs.Config, corpus) -> List[str]:
    """ROMEO: for running text; for lines, the first letters of lines spread over the file."""
    if config.data.mode == "stream":
        return ["ROMEO:"]
    with open(corpus.files[0], "rb") as f:
        lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    count = min(10, len(lines))
    return [lines[i * len(lines) // count][0] for i in range(count)]


def cmd_run(args) -> int:
    from pipeline import corpus as corpus_lib
    config = config_from_args(args)
    data = config.data.path or corpus_lib.download(configs.SHAKESPEARE_URL)
    corpus = corpus_lib.check(data, config.data.mode, config.data.seq_length,
                              config.data.eval_fraction, config.data.encoding_errors)
    if config.eval.max_perplexity is None:
        bound = float(corpus.distinct_chars)
        bound_reason = " (uniform guessing over the corpus' characters; set --max-perplexity)"
    else:
        bound, bound_reason = config.eval.max_perplexity, ""
    pipeline_root = os.path.abspath(config.run.pipeline_root)
    try:
        os.makedirs(pipeline_root, exist_ok=True)
        os.makedirs(os.path.abspath(config.run.serving_dir), exist_ok=True)
    except OSError as err:
        raise CliError(f"{err.filename}: cannot create it ({err.strerror}); "
                       "choose writable --pipeline-root / --serving-dir") from None
    for folder in (pipeline_root, os.path.abspath(config.run.serving_dir)):
        if not os.access(folder, os.W_OK):
            raise CliError(f"{folder}: not writable; choose writable --pipeline-root / "
                           "--serving-dir")

    _setup_logging(args.verbose)
    print(f"textgen: {len(corpus.files)} file(s), {corpus.chars:,} characters → "
          f"{corpus.train_records:,} train / {corpus.eval_records:,} eval records; "
          f"pipeline root {pipeline_root}", file=sys.stderr)
    started = time.time()
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner
    from pipeline import pipeline as pipeline_lib, summary
    tfx_pipeline = pipeline_lib.create_pipeline(
        config, corpus.input_base, corpus.pattern, max_perplexity=bound,
        beam_args=config.run.beam_args or None)
    try:
        LocalDagRunner().run(tfx_pipeline)
    except Exception as err:  # noqa: BLE001 - report and exit non-zero, state stays in MLMD
        logging.getLogger("textgen").exception("pipeline failed")
        print(f"textgen: the pipeline run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    result = summary.collect(pipeline_root)
    print(summary.format_summary(result, corpus, bound, bound_reason, config.eval.max_regression))
    model_dir = result.get("pushed_path") if result.get("blessed") else None
    if model_dir and config.run.sample_chars:
        prompts = sample_prompts(config, corpus)
        per_prompt = config.run.sample_chars if len(prompts) == 1 else \
            max(1, config.run.sample_chars // len(prompts))
        texts = summary.sample(model_dir, prompts, per_prompt, seed=config.train.seed)
        print(f"\nsample from {model_dir} (temperature 0.8):\n" + "-" * 60)
        print("".join(texts) if config.data.mode == "lines" else texts[0])
        print("-" * 60)
    print(f"wall time: {time.time() - started:.0f} s")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    # google-cloud libraries warn about Python versions on import: not the user's business.
    warnings.filterwarnings("ignore", category=FutureWarning)
    args = build_parser().parse_args(argv)
    from components.text_records import CorpusError
    try:
        return args.func(args)
    except (CliError, configs.ConfigError, CorpusError) as err:
        print(f"textgen: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
