"""The TFMA perplexity metric's combiner, against a hand computation."""
import math

import numpy as np
import pytest
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.metrics import metric_types

from models import metrics


def inputs(nll, chars, model_name=None):
    predictions = {"nll": np.array(nll), "num_chars": np.array(chars)}
    if model_name:
        predictions = {model_name: predictions, "other": {"nll": np.array(99.0),
                                                          "num_chars": np.array(1.0)}}
    return metric_types.StandardMetricInputs({constants.PREDICTIONS_KEY: predictions})


@pytest.mark.parametrize("model_name", ["", "candidate"])
def test_perplexity_combiner_is_character_weighted(model_name):
    computation = metrics.Perplexity().computations(model_names=[model_name])[0]
    combiner = computation.combiner
    a = combiner.add_input(combiner.create_accumulator(), inputs(20.0, 10.0, model_name))
    b = combiner.add_input(combiner.create_accumulator(), inputs(6.0, 2.0, model_name))
    result = combiner.extract_output(combiner.merge_accumulators([a, b]))
    by_name = {key.name: value for key, value in result.items()}
    assert by_name["perplexity"] == pytest.approx(math.exp(26.0 / 12.0))
    assert by_name["nats_per_char"] == pytest.approx(26.0 / 12.0)
    assert by_name["bits_per_char"] == pytest.approx(26.0 / 12.0 / math.log(2))


def test_missing_score_outputs_say_which_signature_to_use():
    combiner = metrics.Perplexity().computations(model_names=[""])[0].combiner
    bad = metric_types.StandardMetricInputs({constants.PREDICTIONS_KEY: np.array([0.3])})
    with pytest.raises(ValueError, match="signature_name='score'"):
        combiner.add_input(combiner.create_accumulator(), bad)
