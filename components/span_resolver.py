"""The last N spans for Transform and the Trainer, resolved by TFX from ML Metadata.

TFX's way to train on several spans: ExampleGen reads only the newest span, and a
Resolver with SpanRangeStrategy (RangeConfig.rolling_range) hands the examples of the
last N spans, each read once by an earlier run, to the components that need them.

Two inputs, because a SYNC pipeline's compiler scopes a channel from another node of the
same pipeline to the current run (tfx/dsl/compiler/node_inputs_compiler.py: an
OutputChannel's query carries the pipeline_run context), while a standalone
`Channel(producer_component_id=...)` is queried over the pipeline's whole history:
  current: this run's ExampleGen output (it also orders the Resolver after ExampleGen);
  examples: every examples artifact the ExampleGen ever produced in this pipeline.

Before SpanRangeStrategy picks the range, two filters it lacks:
  - the same source and cut: an artifact whose `cut_fingerprint` differs from the
    current one came from another --data location or other data settings (seq_length,
    mode, eval_fraction, encoding_errors): mixing those would train on records cut two
    ways;
  - one artifact per span: a span read again (a changed file, a code change) leaves
    its older artifacts in ML Metadata; SpanRangeStrategy would return them all. The
    current run's artifact stands for its own span, the newest one for the others.
Spans newer than the current one (data removed since) are left out too.

A ResolverStrategy rather than a resolver function (canned_resolver_functions.rolling_range):
Airflow's legacy driver runs strategies only (tfx/dsl/components/common/resolver.py), and
the resolver functions' span ops (ops_utils.filter_artifacts_by_span) group by the Examples
`span` property, which TFX 1.16's ExampleGen leaves unset (its driver writes span as a
custom property): every artifact would read as span 0, and only the newest would be kept.
SpanRangeStrategy reads the custom property.
"""
from typing import Dict, List, Optional

from tfx import v1 as tfx

from components import names

CURRENT = "current"


def _span(artifact) -> int:
    return artifact.get_int_custom_property(names.SPAN)


def _newest(artifacts) -> "tfx.types.Artifact":
    return max(artifacts, key=lambda a: (a.mlmd_artifact.create_time_since_epoch, a.id))


class LatestSpansStrategy(tfx.dsl.experimental.SpanRangeStrategy):
    """SpanRangeStrategy over one artifact per span, of the current run's source and cut."""

    def resolve_artifacts(self, store, input_dict: Dict[str, List["tfx.types.Artifact"]]
                          ) -> Optional[Dict[str, List["tfx.types.Artifact"]]]:
        if not input_dict.get(CURRENT):
            return None
        # One artifact under the portable orchestrator (LocalDagRunner); every one the
        # ExampleGen produced under Airflow's legacy driver, where the newest is this run's.
        current = _newest(input_dict[CURRENT])
        cut = current.get_string_custom_property(names.CUT_FINGERPRINT)
        by_span: Dict[int, list] = {}
        for artifact in input_dict[names.EXAMPLES]:
            if (artifact.get_string_custom_property(names.CUT_FINGERPRINT) == cut
                    and _span(artifact) < _span(current)):
                by_span.setdefault(_span(artifact), []).append(artifact)
        one_per_span = [_newest(group) for group in by_span.values()] + [current]
        resolved = super().resolve_artifacts(store, {names.EXAMPLES: one_per_span})
        # `current` served the resolution only. Passed on, its artifact would be in both
        # outputs, and ML Metadata records one event per artifact and execution, under one
        # of the two keys: `examples` could lose the current span. Airflow's legacy driver
        # needs every input key in the result.
        return {names.EXAMPLES: sorted(resolved[names.EXAMPLES], key=_span), CURRENT: []}


def span_resolver(example_gen_examples, span_count: int) -> tfx.dsl.Resolver:
    """A Resolver whose outputs["examples"] holds the last span_count spans (oldest first),
    ending with the span of example_gen_examples (the ExampleGen's output channel)."""
    range_config = tfx.proto.RangeConfig(
        rolling_range=tfx.proto.RollingRange(num_spans=span_count))
    return tfx.dsl.Resolver(
        strategy_class=LatestSpansStrategy,
        config={"range_config": range_config},
        current=example_gen_examples,
        # No output_key (as in SpanRangeStrategy's docstring): the compiler keys a node's
        # inputs by producer and output key (compiler_utils.implicit_channel_key), so with
        # one this channel would merge into `current` and see only this run's artifact.
        examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                                 producer_component_id=names.EXAMPLE_GEN),
    ).with_id(names.SPAN_RESOLVER)
