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

from models.settings import CELLS, PRECISIONS  # noqa: E402
from pipeline import configs  # noqa: E402

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2
# sysexits' EX_TEMPFAIL: another run holds the pipeline root; try again later.
EXIT_BUSY = 75


class CliError(Exception):
    """One line for the user, exit code 2."""


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
    "--epochs": ("train", "epochs", int),
    "--steps-per-epoch": ("train", "steps_per_epoch", int),
    "--eval-steps": ("train", "eval_steps", int),
    "--batch-size": ("train", "batch_size", int),
    "--learning-rate": ("train", "learning_rate", float),
    "--seed": ("train", "seed", int),
    "--precision": ("train", "precision", str),
    "--clipnorm": ("train", "clipnorm", float),
    "--patience": ("train", "patience", int),
    "--lr-factor": ("train", "lr_factor", float),
    "--lr-patience": ("train", "lr_patience", int),
    "--warm-start": ("train", "warm_start", bool),
    "--max-perplexity": ("eval", "max_perplexity", float),
    "--max-regression": ("eval", "max_regression", float),
    "--pipeline-root": ("run", "pipeline_root", str),
    "--serving-dir": ("run", "serving_dir", str),
    "--sample-chars": ("run", "sample_chars", int),
    "--lock-timeout": ("run", "lock_timeout", float),
}


def _add_config_flags(p) -> None:
    p.add_argument("--preset", choices=configs.presets(),
                   help="a shipped recipe (pipeline/presets/), under --config and flags: "
                   "tutorial = the TensorFlow tutorial's exact model and training; "
                   "quality = the best model within about 2 CPU-hours; "
                   "default: the best model within about 1 CPU-hour")
    p.add_argument("--config", help="TOML or YAML file with [data] [model] [train] [eval] [run] "
                   "[metadata] [vertex] (see docs/scheduling.md)")
    for flag, (section, name, kind) in RUN_FLAGS.items():
        default = getattr(getattr(configs.Config(), section), name)
        help_text = f"{section}.{name} (default {default})"
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
            continue
        extra = {"choices": ["stream", "lines"]} if flag == "--mode" else \
            {"choices": list(CELLS)} if flag == "--cell" else \
            {"choices": list(PRECISIONS)} if flag == "--precision" else \
            {"choices": ["strict", "replace"]} if flag == "--encoding-errors" else {}
        p.add_argument(flag, type=kind, default=None, help=help_text, **extra)
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
    _add_config_flags(p)
    p.add_argument("-v", "--verbose", action="store_true", help="TFX/Beam INFO logs too")
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
    p.set_defaults(func=cmd_runs)


def _add_compile_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile the pipeline for an orchestrator",
                       description="Writes a Kubeflow Pipelines v2 / Vertex AI Pipelines "
                       "definition (JSON) with TFX's KubeflowV2DagRunner; no cluster needed. "
                       "Data and roots are usually gs:// URIs in the --config file.")
    p.add_argument("--target", choices=["vertex"], required=True)
    p.add_argument("--output", default="textgen_pipeline.json", help="the JSON file to write")
    p.add_argument("--image", help="container image of the components (vertex.image)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_compile)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textgen",
        description="Raw text → TFX pipeline → character-level RNN generator served by "
                    "TensorFlow Serving.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    _add_runs_parser(sub)
    _add_compile_parser(sub)
    from serving import cli as serving_cli  # `serve` and `generate`; imports no TensorFlow
    serving_cli.add_parsers(sub)
    return parser


def config_from_args(args) -> configs.Config:
    overrides = {}
    for flag, (section, name, _) in RUN_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            overrides.setdefault(section, {})[name] = value
    config = configs.load(args.config, overrides, preset=args.preset)
    if args.beam_arg:
        # Added to the file's arguments rather than replacing them: a config holds the
        # runner's set-up, a flag adjusts one value (Beam takes the last one given).
        config.run.beam_args = list(config.run.beam_args) + args.beam_arg
    return config.validate()


def perplexity_bound(config: configs.Config, corpus) -> tuple:
    """(bound, why): eval.max_perplexity, else uniform guessing over the corpus' characters."""
    if config.eval.max_perplexity is not None:
        return config.eval.max_perplexity, ""
    if corpus is None:
        raise CliError("eval.max_perplexity is not set and the corpus cannot be read here to "
                       "derive it: set eval.max_perplexity (--max-perplexity) for this pipeline")
    return float(corpus.distinct_chars), \
        " (uniform guessing over the corpus' characters; set --max-perplexity)"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    if not verbose:
        for noisy in ("apache_beam", "tensorflow", "absl", "tfx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # Beam and tfx-bsl also log through the root logger (BatchElements statistics,
        # "Reading from pattern ..."): only this project's INFO lines stay.
        logging.getLogger().setLevel(logging.WARNING)
        for ours in ("textgen", "components", "models", "pipeline", "serving"):
            logging.getLogger(ours).setLevel(logging.INFO)


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
    corpus = None
    if corpus_lib.is_remote(data):
        # Read by Beam's workers (e.g. Dataflow): too big or too far to check here.
        input_base, pattern = corpus_lib.locate(data)
    else:
        corpus = corpus_lib.check(data, config.data.mode, config.data.seq_length,
                                  config.data.eval_fraction, config.data.encoding_errors,
                                  config.data.span_count)
        input_base, pattern = corpus.input_base, corpus.pattern
    bound, bound_reason = perplexity_bound(config, corpus)
    remote_root = corpus_lib.is_remote(config.run.pipeline_root)
    if remote_root and config.metadata.backend == "sqlite" and not config.metadata.sqlite_path:
        raise CliError(f"run.pipeline_root = {config.run.pipeline_root}: SQLite cannot live "
                       "there; set metadata.sqlite_path to a local file or use backend mysql")
    pipeline_root = config.run.pipeline_root if remote_root else \
        os.path.abspath(config.run.pipeline_root)
    local_dirs = [os.path.abspath(config.run.serving_dir)] + ([] if remote_root
                                                              else [pipeline_root])
    if config.metadata.backend == "sqlite" and config.metadata.sqlite_path:
        local_dirs.append(os.path.dirname(os.path.abspath(config.metadata.sqlite_path)))
    try:
        for folder in local_dirs:
            os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise CliError(f"{err.filename}: cannot create it ({err.strerror}); "
                       "choose writable --pipeline-root / --serving-dir") from None
    for folder in local_dirs:
        if not os.access(folder, os.W_OK):
            raise CliError(f"{folder}: not writable; choose writable --pipeline-root / "
                           "--serving-dir")

    from pipeline.lock import LockBusy, PipelineLock, local_lock_dir
    try:
        # Held through the summary: it reads ML Metadata and writes into the root.
        with PipelineLock(local_lock_dir(pipeline_root, corpus_lib.cache_dir()),
                          config.run.lock_timeout):
            return _run_locked(args, config, corpus, input_base, pattern, bound, bound_reason,
                               pipeline_root)
    except LockBusy as err:
        print(f"textgen: {err}", file=sys.stderr)
        return EXIT_BUSY


def _run_locked(args, config, corpus, input_base, pattern, bound, bound_reason,
                pipeline_root) -> int:
    _setup_logging(args.verbose)
    from pipeline import pipeline as pipeline_lib
    if corpus is not None:
        spans = f", span {corpus.spans[0]}-{corpus.spans[-1]}" if corpus.spans else ""
        print(f"textgen: {len(corpus.files)} file(s){spans}, {corpus.chars:,} characters → "
              f"{corpus.train_records:,} train / {corpus.eval_records:,} eval records; "
              f"pipeline root {pipeline_root}", file=sys.stderr)
    else:
        print(f"textgen: reading {input_base}/{pattern} on the Beam workers; pipeline root "
              f"{pipeline_root}", file=sys.stderr)
    print(f"textgen: Beam arguments: {' '.join(pipeline_lib.beam_args(config))}",
          file=sys.stderr)
    started = time.time()
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner
    from pipeline import summary
    tfx_pipeline = pipeline_lib.create_pipeline(config, input_base, pattern,
                                                max_perplexity=bound)
    try:
        LocalDagRunner().run(tfx_pipeline)
    except Exception as err:  # noqa: BLE001 - report and exit non-zero, state stays in MLMD
        logging.getLogger("textgen").exception("pipeline failed")
        print(f"textgen: the pipeline run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    result = summary.collect(pipeline_root, config.metadata, config.run.pipeline_name)
    print(summary.format_summary(result, corpus, bound, bound_reason, config.eval.max_regression))
    model_dir = result.get("pushed_path") if result.get("blessed") else None
    if corpus is None and config.data.mode == "lines":
        model_dir = None  # the prompts are first letters of the corpus' lines
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


def cmd_runs(args) -> int:
    from pipeline import runs
    config = configs.load(args.config) if args.config else configs.Config()
    root = os.path.abspath(args.pipeline_root or config.run.pipeline_root)
    try:
        rows = runs.list_runs(root, config.metadata, config.run.pipeline_name)
    except (FileNotFoundError, ConnectionError) as err:
        raise CliError(f"{err}; pass --pipeline-root DIR or --config FILE") from None
    if args.last is not None:
        rows = rows[-args.last:] if args.last > 0 else []
    print(runs.format_json(rows) if args.json else runs.format_table(rows))
    return 0


def cmd_compile(args) -> int:
    config = config_from_args(args)
    if args.image:
        config.vertex.image = args.image
    if not config.data.path:
        raise CliError("set data.path (--data) to where the pipeline will read its text, "
                       "e.g. gs://BUCKET/text/span-{SPAN}/*.txt")
    from pipeline import corpus as corpus_lib
    corpus = None
    if not corpus_lib.is_remote(config.data.path):
        corpus = corpus_lib.check(config.data.path, config.data.mode, config.data.seq_length,
                                  config.data.eval_fraction, config.data.encoding_errors,
                                  config.data.span_count)
    input_base, pattern = corpus_lib.locate(config.data.path)
    bound, _ = perplexity_bound(config, corpus)
    output = os.path.abspath(args.output)
    if not os.path.isdir(os.path.dirname(output)):
        raise CliError(f"--output {args.output}: its folder does not exist")
    from pipeline.orchestrators import vertex
    definition = vertex.compile_pipeline(config, input_base, pattern, bound, output)
    tasks = definition["pipelineSpec"]["root"]["dag"]["tasks"]
    print(f"wrote {output}: Kubeflow Pipelines v2 definition of '{config.run.pipeline_name}' "
          f"with {len(tasks)} tasks ({', '.join(sorted(tasks))}); image {config.vertex.image}")
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
