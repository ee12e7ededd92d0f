"""Kubeflow Pipelines v2 / Vertex AI Pipelines: the pipeline compiled to a JSON definition.

TFX's KubeflowV2DagRunner only compiles (protos from kfp-pipeline-spec); submitting
the file is Vertex's business (docs/scheduling.md shows how). Every component runs in
`vertex.image`, the pipeline image (deploy/Dockerfile); the Trainer asks for the [vertex]
CPU, memory and GPUs, which Vertex turns into its machine type and accelerators.
"""
import json
import os
from typing import Any, Dict

from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from components import names
from pipeline import corpus as corpus_lib, pipeline as pipeline_lib
from pipeline.configs import Config, ConfigError

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


def trainer_resources(config: Config) -> ResourceSpec:
    v = config.vertex
    spec = ResourceSpec(cpu_limit=v.trainer_cpu, memory_limit=v.trainer_memory_gb)
    if v.trainer_gpus:
        # With several GPUs on the machine the Trainer's run_fn picks MirroredStrategy.
        spec.accelerator.type = v.trainer_gpu_type
        spec.accelerator.count = v.trainer_gpus
    return spec


def compile_pipeline(config: Config, output_file: str) -> Dict[str, Any]:
    """Writes the PipelineJob JSON to output_file and returns it as a dict.

    Local data is checked as `textgen run` checks it (and gives the perplexity bound when
    eval.max_perplexity is unset); remote data is left to the pipeline's workers.
    """
    if not config.data.path:
        raise ConfigError("set data.path (--data) to where the pipeline will read its text, "
                          "e.g. gs://BUCKET/text/span-{SPAN}/*.txt")
    corpus = None
    if not corpus_lib.is_remote(config.data.path):
        corpus = corpus_lib.check(config.data.path, config.data.mode, config.data.seq_length,
                                  config.data.eval_fraction, config.data.encoding_errors,
                                  config.data.span_count)
    input_base, input_pattern = corpus_lib.locate(config.data.path)
    max_perplexity, _ = corpus_lib.perplexity_bound(config.eval.max_perplexity, corpus)
    if not config.vertex.image:
        raise ConfigError("set vertex.image (--image) to the pipeline image: build it from "
                          "deploy/Dockerfile and push it to a registry Vertex can pull from, "
                          "e.g. europe-docker.pkg.dev/PROJECT/REPO/textgen-pipeline:0.1.0")
    if not os.path.isdir(os.path.dirname(os.path.abspath(output_file))):
        raise ConfigError(f"--output {output_file}: its folder does not exist")
    output_file = os.path.abspath(output_file)
    # KubeflowV2DagRunner compiles no span-range resolver (its step builder takes only
    # latest-artifact and latest-blessed-model strategies): the ExampleGen reads the range.
    tfx_pipeline = pipeline_lib.create_pipeline(config, input_base, input_pattern,
                                                max_perplexity, resolve_spans=False)
    # Vertex keeps ML Metadata itself: a connection config would only mislead readers.
    tfx_pipeline.metadata_connection_config = None
    for component in tfx_pipeline.components:
        if component.id == names.TRAINER:
            component.with_platform_config(trainer_resources(config))
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            display_name=config.run.pipeline_name, default_image=config.vertex.image),
        output_dir=os.path.dirname(output_file), output_filename=os.path.basename(output_file))
    runner.run(tfx_pipeline, write_out=True)
    with open(output_file, encoding="utf-8") as f:
        return json.load(f)
