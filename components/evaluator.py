"""TFX's Evaluator, which also writes its numbers onto the evaluation artifact.

TFMA keeps metrics in its own files, readable only with TFMA (and so TensorFlow)
imported. Copied into ML Metadata as custom properties (`perplexity`,
`baseline_perplexity`, ...), they let `textgen runs` list past runs in a fraction of
a second, under any orchestrator, without opening an artifact.
"""
from typing import Dict

from tfx import v1 as tfx
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils, standard_component_specs

from components import names



def read_metrics(evaluation_uri: str) -> Dict[str, Dict[str, float]]:
    """model name ("" or "candidate" = the candidate, "baseline") → {metric: value}."""
    import tensorflow_model_analysis as tfma
    values: Dict[str, Dict[str, float]] = {}
    for result in tfma.load_metrics(evaluation_uri):
        for kv in result.metric_keys_and_values:
            if kv.key.is_diff:  # candidate − baseline; the two values are kept instead
                continue
            which = values.setdefault(kv.key.model_name, {})
            if kv.value.HasField("double_value"):
                which[kv.key.name] = kv.value.double_value.value
    return values


def metric_properties(values: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """{model: {metric: v}} → flat property names: metric for the candidate,
    baseline_metric for the baseline."""
    props = {}
    for model_name, metrics in values.items():
        prefix = names.BASELINE_PREFIX if model_name == "baseline" else ""
        for name, value in metrics.items():
            props[prefix + name] = value
    return props


class Executor(evaluator_executor.Executor):

    def Do(self, input_dict, output_dict, exec_properties):
        super().Do(input_dict, output_dict, exec_properties)
        evaluation = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EVALUATION_KEY])
        for name, value in metric_properties(read_metrics(evaluation.uri)).items():
            evaluation.set_float_custom_property(name, value)


class Evaluator(tfx.components.Evaluator):
    """tfx.components.Evaluator with the metrics also recorded in ML Metadata."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
