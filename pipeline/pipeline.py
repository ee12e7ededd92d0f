"""The TFX pipeline: raw text → examples → vocabulary → model → blessing → push.

    TextExampleGen → StatisticsGen → SchemaGen → ExampleValidator
       │    │                           │
       │  span range resolver           │      (the last N spans, from ML Metadata)
       │    └─────→ Transform ←─────────┘      (character vocabulary, text → ids)
       │               │
       │            Trainer                     (models.trainer.run_fn)
       │               │
       └──→ Evaluator ← latest blessed model    (the newest span's eval split: perplexity
               │       │                         bound, no regression)
               │  InfraValidator                (the model served by `textgen serve` in a
               │       │                         process of its own: loads, answers, fast)
               └──→ Pusher                      (<serving_dir>/<version>/, atomic)

Where the last N spans come from is chosen here, by create_pipeline's resolve_spans: a
Resolver (local runs, Airflow), or the ExampleGen reading them all again on every run
(Vertex: KubeflowV2DagRunner compiles only latest-artifact and latest-blessed-model
resolvers). docs/scheduling.md says more.
"""
import hashlib
import os
from typing import List, Optional

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components import names
from components.evaluator import Evaluator
from components.infra_validator import InfraValidator
from components.pusher import Pusher
from components.span_resolver import span_resolver
from components.text_example_gen import text_example_gen
from models import features, metrics
from pipeline import metadata
from pipeline.configs import Config

# Where the project's own code lives; its hash goes into component settings so that
# a code change invalidates TFX's cache (code wired by dotted path is invisible to it).
_CODE_PACKAGES = ("components", "models")


def code_fingerprint(root: Optional[str] = None) -> str:
    """sha256 (16 hex digits) of the .py files of _CODE_PACKAGES under root (default:
    where this code is installed)."""
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha256()
    for package in _CODE_PACKAGES:
        package_dir = os.path.join(root, package)
        for name in sorted(os.listdir(package_dir)):
            if name.endswith(".py") and not name.endswith("_test.py"):
                digest.update(name.encode() + b"\0")
                with open(os.path.join(package_dir, name), "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:16]


def eval_config(max_perplexity: float, max_regression: float) -> tfma.EvalConfig:
    """Blessing: perplexity within the bound and no worse than the baseline by more than
    max_regression (relative). Without a baseline only the bound applies."""
    return tfma.EvalConfig(
        # tf_generic: the SavedModel is a tf.Module with signatures, not a Keras model.
        model_specs=[tfma.ModelSpec(signature_name=features.SCORE_SIGNATURE,
                                    model_type=tfma.constants.TF_GENERIC)],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(
                class_name=metrics.Perplexity.__name__,
                module=metrics.__name__,
                threshold=tfma.MetricThreshold(
                    value_threshold=tfma.GenericValueThreshold(
                        upper_bound={"value": max_perplexity}),
                    change_threshold=tfma.GenericChangeThreshold(
                        direction=tfma.MetricDirection.LOWER_IS_BETTER,
                        relative={"value": max_regression}))),
        ])],
    )


def create_pipeline(config: Config, input_base: str, input_pattern: str, max_perplexity: float,
                    extra_beam_args: Optional[List[str]] = None,
                    metadata_connection=None, resolve_spans: bool = True) -> tfx.dsl.Pipeline:
    """Wires the components. Paths must be absolute (they are part of cache keys).

    metadata_connection: an ML Metadata ConnectionConfig; default, the config's
    [metadata] section (SQLite under the pipeline root unless it says mysql).
    resolve_spans: Transform and the Trainer get data.span_count spans from a Resolver,
    each span read by the ExampleGen once, in the run it arrived; False: the ExampleGen
    reads all of them again in every run (for orchestrators without such a Resolver).
    """
    fingerprint = code_fingerprint()
    data = config.data
    pipeline_root = _absolute(config.run.pipeline_root)
    serving_dir = _absolute(config.run.serving_dir)
    if metadata_connection is None:
        metadata_connection = metadata.connection_config(config.metadata, pipeline_root)

    example_gen = text_example_gen(
        input_base=input_base, pattern=input_pattern, mode=data.mode,
        seq_length=data.seq_length, eval_fraction=data.eval_fraction,
        encoding_errors=data.encoding_errors, code_fingerprint=fingerprint,
        span_count=1 if resolve_spans else data.span_count)
    # The newest span (or, without a resolver, the whole range): statistics, schema and
    # the Evaluator's eval split.
    examples = example_gen.outputs[names.EXAMPLES]
    range_nodes = []
    training_examples = examples
    if resolve_spans:
        range_nodes = [span_resolver(examples, data.span_count)]
        training_examples = range_nodes[0].outputs[names.EXAMPLES]
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs[names.EXAMPLES]).with_id(names.STATISTICS_GEN)
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"]).with_id(names.SCHEMA_GEN)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id(names.EXAMPLE_VALIDATOR)

    transform = tfx.components.Transform(
        examples=training_examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn="models.preprocessing.preprocessing_fn",
        custom_config={"code_fingerprint": fingerprint}).with_id(names.TRANSFORM)

    # custom_config is the one source of the training's steps and epochs: TrainArgs and
    # EvalArgs stay empty (run_fn reads neither).
    trainer = tfx.components.Trainer(
        run_fn="models.trainer.run_fn",
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs[names.TRANSFORM_GRAPH],
        schema=schema_gen.outputs["schema"],
        custom_config={
            "model": config.to_dict()["model"],
            "train": config.to_dict()["train"],
            "mode": data.mode,
            # Where warm start finds the latest blessed model (models/warm_start.py).
            "serving_dir": serving_dir,
            "code_fingerprint": fingerprint,
        }).with_id(names.TRAINER)

    baseline_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(names.BASELINE_RESOLVER)

    evaluator = Evaluator(
        examples=examples,
        model=trainer.outputs[names.MODEL],
        baseline_model=baseline_resolver.outputs[names.MODEL],
        example_splits=[names.EVAL],
        eval_config=eval_config(max_perplexity, config.eval.max_regression)
    ).with_id(names.EVALUATOR)

    infra_validator = InfraValidator(
        model=trainer.outputs[names.MODEL], generate_chars=config.infra.generate_chars,
        max_latency_ms=config.infra.max_latency_ms, timeout=config.infra.timeout,
    ).with_id(names.INFRA_VALIDATOR)

    pusher = Pusher(model=trainer.outputs[names.MODEL],
                    model_blessing=evaluator.outputs[names.BLESSING],
                    infra_blessing=infra_validator.outputs[names.BLESSING],
                    serving_dir=serving_dir).with_id(names.PUSHER)

    return tfx.dsl.Pipeline(
        pipeline_name=config.run.pipeline_name,
        pipeline_root=pipeline_root,
        components=[example_gen, *range_nodes, statistics_gen, schema_gen, example_validator,
                    transform, trainer, baseline_resolver, evaluator, infra_validator, pusher],
        enable_cache=True,
        metadata_connection_config=metadata_connection,
        beam_pipeline_args=beam_args(config, extra_beam_args),
    )


def _absolute(path: str) -> str:
    """Local paths made absolute (they are part of cache keys); URIs kept as they are."""
    return path if "://" in path else os.path.abspath(path)


def default_beam_args() -> List[str]:
    # Named explicitly: left to choose, Beam first tries the Prism runner, which
    # downloads a binary (offline: a failure and a fallback on every run).
    return ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]


def beam_args(config: Config, extra: Optional[List[str]] = None) -> List[str]:
    """Defaults, then the config's run.beam_args, then extra (--beam-arg flags): Beam
    parses them in order, so a later --name=value overrides an earlier one."""
    return default_beam_args() + list(config.run.beam_args) + list(extra or [])
