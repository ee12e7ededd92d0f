"""The local run behind `textgen run`: checks, the pipeline root's lock, TFX's
LocalDagRunner, and the summary read back from ML Metadata.

Beside airflow_dag.py and vertex.py: those hand the same pipeline (pipeline/pipeline.py)
to a scheduler; this one runs it here, now, one run at a time per pipeline root.
"""
import dataclasses
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from models import settings
from models.settings import DEFAULT_SAMPLING
from pipeline import configs, corpus as corpus_lib, logs
from pipeline.lock import PipelineLock, local_lock_dir

logger = logging.getLogger("textgen")


class RunFailed(RuntimeError):
    """The pipeline started and a component failed; its state stays in ML Metadata."""


@dataclasses.dataclass
class RunResult:
    summary: Dict[str, Any]  # pipeline/summary.py's dict, also in last_run_summary.json
    corpus: Optional[corpus_lib.Corpus]  # None when the data is remote
    bound: float  # the perplexity bound the Evaluator applied
    bound_reason: str  # why that bound ("" when eval.max_perplexity set it)
    log_path: Optional[str]  # the stack's own output (None with verbose: on the terminal)
    sample_model: Optional[str] = None  # the pushed model the sample came from
    samples: List[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def _prepare_dirs(config: configs.Config) -> str:
    """Creates the local folders a run writes; returns the pipeline root (absolute if local)."""
    remote_root = corpus_lib.is_remote(config.run.pipeline_root)
    if remote_root and config.metadata.backend == "sqlite" and not config.metadata.sqlite_path:
        raise configs.ConfigError(
            f"run.pipeline_root = {config.run.pipeline_root}: SQLite cannot live there; set "
            "metadata.sqlite_path to a local file or use backend mysql")
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
        raise configs.ConfigError(f"{err.filename}: cannot create it ({err.strerror}); choose "
                                  "writable --pipeline-root / --serving-dir") from None
    for folder in local_dirs:
        if not os.access(folder, os.W_OK):
            raise configs.ConfigError(f"{folder}: not writable; choose writable "
                                      "--pipeline-root / --serving-dir")
    return pipeline_root


def sample_prompts(config: configs.Config, corpus) -> List[str]:
    """The default prompt (models/settings.py) for running text; for lines, the first letters
    of lines spread over the file."""
    if config.data.mode == "stream":
        return [DEFAULT_SAMPLING.prompt]
    with open(corpus.files[0], "rb") as f:
        text = f.read().decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    count = min(10, len(lines))
    return [lines[i * len(lines) // count][0] for i in range(count)]


def run(config: configs.Config, preset: Tuple[str, str], verbose: bool = False) -> RunResult:
    """Runs the pipeline once for a validated config; `preset` (name, why) is what the
    config was built on (configs.resolve_preset), for the log.

    Raises ConfigError or CorpusError (bad input, before any Beam work), LockBusy (another
    run holds the pipeline root) or RunFailed (a component failed).
    """
    started = time.time()
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
    bound, bound_reason = corpus_lib.perplexity_bound(config.eval.max_perplexity, corpus)
    pipeline_root = _prepare_dirs(config)
    # Held through the summary: it reads ML Metadata and writes into the root.
    with PipelineLock(local_lock_dir(pipeline_root, corpus_lib.cache_dir()),
                      config.run.lock_timeout):
        with logs.run_output(pipeline_root, verbose) as log_path:
            result = _run_locked(config, corpus, input_base, pattern, bound, pipeline_root,
                                 preset)
    result.bound_reason, result.log_path = bound_reason, None if verbose else log_path
    result.seconds = time.time() - started
    return result


def _run_locked(config, corpus, input_base, pattern, bound, pipeline_root,
                preset) -> RunResult:
    if corpus is not None:
        span = f", span {corpus.spans[0]}-{corpus.spans[-1]}" if corpus.spans else ""
        logger.info("%d file(s)%s, %s characters → %s train / %s eval records; pipeline root %s",
                    len(corpus.files), span, f"{corpus.chars:,}", f"{corpus.train_records:,}",
                    f"{corpus.eval_records:,}", pipeline_root)
    else:
        logger.info("reading %s/%s on the Beam workers; pipeline root %s", input_base, pattern,
                    pipeline_root)
    m, t = config.model, config.train
    schedule = (f"decaying over {t.epochs} epochs" if t.lr_schedule == "cosine" else
                f"decaying over the epochs the CPU budget holds (at most {t.epochs})"
                if t.lr_schedule == "cosine_budget" else
                "cut at plateaus" if t.lr_factor < 1 else "constant")
    if t.cooldown_epochs:
        schedule += f", towards zero over the run's last {t.cooldown_epochs}"
    source = settings.train_input(t, config.data.mode)
    windows = "" if source == settings.RECORDS else source
    logger.info("recipe: preset %s (%s): %s %d×%d, dropout %g%s; batch %d%s, learning rate %g "
                "%s%s, at most %d epochs%s", preset[0], preset[1], m.cell.upper(),
                m.rnn_layers, m.rnn_units, m.dropout,
                f", recurrent weights dropped {m.weight_drop:g}" if m.weight_drop else "",
                t.batch_size,
                f" ({windows})" if windows else "", t.learning_rate, schedule,
                f", weights' moving average {t.ema_momentum:g}" if t.ema_momentum else "",
                t.epochs,
                f" or {t.max_cpu_minutes:g} CPU-minutes" if t.max_cpu_minutes else "")
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from pipeline import pipeline as pipeline_lib, records, summary
    logger.info("Beam arguments: %s", " ".join(pipeline_lib.beam_args(config)))
    tfx_pipeline = pipeline_lib.create_pipeline(config, input_base, pattern,
                                                max_perplexity=bound)
    try:
        LocalDagRunner().run(tfx_pipeline)
    except Exception as err:  # noqa: BLE001 - reported by the caller; state stays in MLMD
        logger.exception("pipeline failed")
        raise RunFailed(f"{type(err).__name__}: {err}") from err
    record = records.latest_run(pipeline_root, config.metadata, config.run.pipeline_name)
    result = RunResult(summary=summary.collect(record, pipeline_root), corpus=corpus,
                       bound=bound, bound_reason="", log_path=None)
    model_dir = record.pushed_path if record.blessed else None
    if corpus is None and config.data.mode == "lines":
        model_dir = None  # the prompts are first letters of the corpus' lines
    if model_dir and config.run.sample_chars:
        prompts = sample_prompts(config, corpus)
        per_prompt = config.run.sample_chars if len(prompts) == 1 else \
            max(1, config.run.sample_chars // len(prompts))
        result.sample_model = model_dir
        result.samples = summary.sample(model_dir, prompts, per_prompt, seed=config.train.seed)
    return result
