"""Character-weighted perplexity for TFMA, from the `score` signature's outputs.

perplexity = exp(Σ NLL / Σ characters) over the whole eval split: a long example
weighs more than a short one (the mean of per-example perplexities would not).
Also reported: the same loss in nats/char and bits/char.
"""
import math
from typing import Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.metrics import metric_types

from models import features

PERPLEXITY = "perplexity"
NATS_PER_CHAR = "nats_per_char"
BITS_PER_CHAR = "bits_per_char"


def perplexity_from_sums(total_nll: float, total_chars: float) -> Tuple[float, float, float]:
    """(perplexity, nats/char, bits/char); NaN when there are no characters."""
    if total_chars <= 0:
        return float("nan"), float("nan"), float("nan")
    nats = total_nll / total_chars
    return math.exp(nats), nats, nats / math.log(2)


class Perplexity(metric_types.Metric):
    """TFMA metric; configure with
    MetricConfig(class_name='Perplexity', module='models.metrics')."""

    def __init__(self, name: str = PERPLEXITY):
        super().__init__(_perplexity_computations, name=name)

    @property
    def compute_confidence_interval(self) -> bool:
        return False


metric_types.register_metric(Perplexity)


def _perplexity_computations(name: str = PERPLEXITY, model_names: Optional[List[str]] = None,
                             output_names: Optional[List[str]] = None, sub_keys=None,
                             example_weighted: bool = False) -> metric_types.MetricComputations:
    del output_names, sub_keys  # the score signature's outputs are fixed
    computations = []
    for model_name in model_names or [""]:
        keys = [metric_types.MetricKey(name=n, model_name=model_name,
                                       example_weighted=example_weighted)
                for n in (name, NATS_PER_CHAR, BITS_PER_CHAR)]
        computations.append(metric_types.MetricComputation(
            keys=keys,
            preprocessors=[metric_types.StandardMetricInputsPreprocessor(
                include_filter={constants.PREDICTIONS_KEY: {}}, include_default_inputs=False)],
            combiner=_PerplexityCombiner(model_name, keys)))
    return computations


class _PerplexityCombiner(beam.CombineFn):
    """Accumulates (Σ NLL, Σ characters) in float64."""

    def __init__(self, model_name: str, keys: List[metric_types.MetricKey]):
        self._model_name = model_name
        self._keys = keys

    def create_accumulator(self) -> Tuple[float, float]:
        return 0.0, 0.0

    def add_input(self, accumulator, element: metric_types.StandardMetricInputs):
        predictions = element.get_by_key(constants.PREDICTIONS_KEY, self._model_name or None)
        if not isinstance(predictions, dict) or features.NLL_OUTPUT not in predictions:
            raise ValueError(
                f"perplexity needs the '{features.SCORE_SIGNATURE}' signature's outputs "
                f"{features.NLL_OUTPUT!r} and {features.NUM_CHARS_OUTPUT!r}; got {predictions!r}. "
                f"Set ModelSpec(signature_name='{features.SCORE_SIGNATURE}').")
        nll = np.asarray(predictions[features.NLL_OUTPUT], dtype=np.float64)
        chars = np.asarray(predictions[features.NUM_CHARS_OUTPUT], dtype=np.float64)
        return accumulator[0] + float(nll.sum()), accumulator[1] + float(chars.sum())

    def merge_accumulators(self, accumulators: Iterable[Tuple[float, float]]):
        total_nll, total_chars = 0.0, 0.0
        for nll, chars in accumulators:
            total_nll += nll
            total_chars += chars
        return total_nll, total_chars

    def extract_output(self, accumulator) -> Dict[metric_types.MetricKey, float]:
        return dict(zip(self._keys, perplexity_from_sums(*accumulator)))
