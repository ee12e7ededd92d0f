"""Reading what a pipeline run did from ML Metadata (executions, states, artifacts, times)."""
import dataclasses
import os
from typing import Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

STATE_NAMES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


@dataclasses.dataclass
class NodeRun:
    node_id: str
    state: str  # COMPLETE, CACHED, FAILED, RUNNING, ...
    seconds: float
    outputs: Dict[str, List[metadata_store_pb2.Artifact]]
    inputs: Dict[str, List[metadata_store_pb2.Artifact]]
    execution: metadata_store_pb2.Execution


def open_store(pipeline_root: str) -> metadata_store.MetadataStore:
    path = os.path.join(pipeline_root, "metadata.sqlite")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no ML Metadata at {path}: has a pipeline run there yet?")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def pipeline_runs(store) -> List[metadata_store_pb2.Context]:
    """Pipeline run contexts, oldest first."""
    return sorted(store.get_contexts_by_type("pipeline_run"),
                  key=lambda c: (c.create_time_since_epoch, c.id))


def node_runs(store, run_context: metadata_store_pb2.Context) -> Dict[str, NodeRun]:
    """node id → what that node did in the given pipeline run."""
    executions = {e.id: e for e in store.get_executions_by_context(run_context.id)}
    if not executions:
        return {}
    node_of: Dict[int, str] = {}
    for context in store.get_contexts_by_type("node"):
        for execution in store.get_executions_by_context(context.id):
            if execution.id in executions:
                node_of[execution.id] = context.name.split(".", 1)[-1]
    events = store.get_events_by_execution_ids(list(executions))
    artifacts = {a.id: a for a in store.get_artifacts_by_id({e.artifact_id for e in events})}
    runs: Dict[str, NodeRun] = {}
    for execution_id, execution in executions.items():
        node_id = node_of.get(execution_id, execution.name or str(execution_id))
        runs[node_id] = NodeRun(
            node_id=node_id, state=STATE_NAMES.get(execution.last_known_state, "UNKNOWN"),
            seconds=(execution.last_update_time_since_epoch
                     - execution.create_time_since_epoch) / 1000.0,
            outputs={}, inputs={}, execution=execution)
    for event in events:
        run = runs[node_of.get(event.execution_id, str(event.execution_id))]
        key = event.path.steps[0].key if event.path.steps else ""
        side = run.outputs if event.type in (metadata_store_pb2.Event.OUTPUT,
                                             metadata_store_pb2.Event.DECLARED_OUTPUT) \
            else run.inputs
        if event.artifact_id in artifacts:
            side.setdefault(key, []).append(artifacts[event.artifact_id])
    return runs


def custom(artifact: metadata_store_pb2.Artifact, name: str) -> Optional[object]:
    """A custom property's value (int, double or string), None if absent."""
    if name not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[name]
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
