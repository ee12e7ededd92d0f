"""components/names.py repeats TFX's key names (it must not import TFX): they must agree."""
from tfx.components.evaluator import constants as evaluator_constants
from tfx.components.infra_validator import executor as infra_validator_executor
from tfx.types import standard_component_specs as specs

from components import names
from models import metrics


def test_output_keys_and_properties_are_tfx_own():
    assert names.EXAMPLES == specs.EXAMPLES_KEY
    assert names.TRANSFORM_GRAPH == specs.TRANSFORM_GRAPH_KEY
    assert names.MODEL == specs.MODEL_KEY
    assert names.MODEL_RUN == specs.MODEL_RUN_KEY
    assert names.BASELINE_MODEL == specs.BASELINE_MODEL_KEY
    assert names.EVALUATION == specs.EVALUATION_KEY
    assert names.BLESSING == specs.BLESSING_KEY
    assert names.PUSHED_MODEL == specs.PUSHED_MODEL_KEY
    assert names.INFRA_BLESSING == specs.INFRA_BLESSING_KEY
    assert names.BLESSED == evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY


def test_the_infra_blessing_is_written_as_tfx_own_infra_validator_writes_it():
    from components import infra_validator
    # TFX's Pusher and model_utils.is_infra_validated read these.
    assert infra_validator_executor._BLESSED_KEY == names.BLESSED
    assert infra_validator_executor._BLESSED_FILENAME == infra_validator.BLESSED_FILE
    assert infra_validator_executor._NOT_BLESSED_FILENAME == infra_validator.NOT_BLESSED_FILE


def test_the_metric_name_is_the_metrics_module_one():
    assert names.PERPLEXITY == metrics.PERPLEXITY
