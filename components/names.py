"""Names ML Metadata records for this pipeline: node ids, output keys, artifact properties.

Plain constants, no TFX import: the components write these names, `textgen runs` and
the run summary read them back (pipeline/records.py) without loading TFX or TensorFlow.
Output keys and `blessed` are TFX's own names (tests/test_names.py checks them against
tfx.types.standard_component_specs).
"""

# Node ids, as wired in pipeline/pipeline.py.
EXAMPLE_GEN = "TextExampleGen"
SPAN_RESOLVER = "span_range_resolver"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_GEN = "SchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
TRANSFORM = "Transform"
TRAINER = "Trainer"
BASELINE_RESOLVER = "latest_blessed_model_resolver"
EVALUATOR = "Evaluator"
INFRA_VALIDATOR = "InfraValidator"
PUSHER = "Pusher"
NODE_ORDER = (EXAMPLE_GEN, SPAN_RESOLVER, STATISTICS_GEN, SCHEMA_GEN, EXAMPLE_VALIDATOR,
              TRANSFORM, TRAINER, BASELINE_RESOLVER, EVALUATOR, INFRA_VALIDATOR, PUSHER)

# Input and output keys of TFX's component specs.
EXAMPLES = "examples"
TRANSFORM_GRAPH = "transform_graph"
MODEL = "model"
MODEL_RUN = "model_run"
BASELINE_MODEL = "baseline_model"
EVALUATION = "evaluation"
BLESSING = "blessing"
INFRA_BLESSING = "infra_blessing"
PUSHED_MODEL = "pushed_model"

# The splits the text ExampleGen writes.
TRAIN, EVAL = "train", "eval"

# Examples: TFX's span number (a custom property its ExampleGen driver sets); every span
# read (e.g. "3-5", when the ExampleGen reads a range itself, as under Vertex); a hash of
# where the text came from and how it was cut into records (components/span_resolver.py
# keeps to one cut); and per split the records and characters counted by the text
# ExampleGen.
SPAN = "span"
SPANS = "spans"
CUT_FINGERPRINT = "cut_fingerprint"


def records_property(split: str) -> str:
    return f"{split}_records"


def chars_property(split: str) -> str:
    return f"{split}_chars"


# ModelBlessing: TFX's Evaluator sets it to 1 or 0; so does the InfraValidator on its
# InfraBlessing, with why not and the latency it measured (components/infra_validator.py).
BLESSED = "blessed"
REASON = "reason"
LATENCY_MS = "generate_latency_ms"
# Evaluation: each metric under its own name for the candidate, with this prefix for the
# baseline (components/evaluator.py).
BASELINE_PREFIX = "baseline_"
PERPLEXITY = "perplexity"  # models/metrics.py's metric name (that module loads TFMA)
# PushedModel (components/pusher.py).
PUSHED, PUSHED_DESTINATION, PUSHED_VERSION = "pushed", "pushed_destination", "pushed_version"
NOT_PUSHED_BECAUSE = "not_pushed_because"
