"""ML Metadata: where it lives (SQLite or MySQL) and what a pipeline run did in it.

Imports ml_metadata only (no TFX, no TensorFlow), so `textgen runs` answers quickly.
"""
import dataclasses
import os
from typing import Dict, Iterable, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.configs import MetadataSettings

STATE_NAMES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


@dataclasses.dataclass
class NodeRun:
    node_id: str
    state: str  # COMPLETE, CACHED, FAILED, RUNNING, ...
    seconds: float
    outputs: Dict[str, List[metadata_store_pb2.Artifact]]
    inputs: Dict[str, List[metadata_store_pb2.Artifact]]
    execution: metadata_store_pb2.Execution


def sqlite_path(pipeline_root: str, settings: Optional[MetadataSettings] = None) -> str:
    return (settings.sqlite_path if settings is not None and settings.sqlite_path
            else os.path.join(pipeline_root, "metadata.sqlite"))


def connection_config(settings: MetadataSettings, pipeline_root: str,
                      read_only: bool = False) -> metadata_store_pb2.ConnectionConfig:
    """The ML Metadata connection for a config's [metadata] section (MetadataSettings)."""
    config = metadata_store_pb2.ConnectionConfig()
    if settings.backend == "mysql":
        mysql = config.mysql
        mysql.host, mysql.port = settings.mysql_host, settings.mysql_port
        mysql.database, mysql.user = settings.mysql_database, settings.mysql_user
        mysql.password = os.environ.get(settings.mysql_password_env or "",
                                        settings.mysql_password)
        if settings.mysql_socket:
            mysql.socket = settings.mysql_socket
        return config
    config.sqlite.filename_uri = sqlite_path(pipeline_root, settings)
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READONLY if read_only
        else metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
    return config


def open_store(pipeline_root: str, settings: Optional[MetadataSettings] = None
               ) -> metadata_store.MetadataStore:
    """Read-only store of a pipeline root (SQLite) or of the config's MySQL database."""
    if settings is not None and settings.backend == "mysql":
        config = connection_config(settings, pipeline_root)
        try:
            return metadata_store.MetadataStore(config)
        except Exception as err:  # noqa: BLE001 - MLMD raises its own status errors
            raise ConnectionError(
                f"ML Metadata at mysql://{config.mysql.user}@{config.mysql.host}:"
                f"{config.mysql.port}/{config.mysql.database}: cannot connect ({err}); check "
                "the [metadata] settings and that the server is up") from None
    path = sqlite_path(pipeline_root, settings)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no ML Metadata at {path}: has a pipeline run there yet?")
    return metadata_store.MetadataStore(connection_config(
        settings or MetadataSettings(), pipeline_root, read_only=True))


def pipeline_runs(store, pipeline_name: Optional[str] = None) -> List[metadata_store_pb2.Context]:
    """Pipeline run contexts, oldest first; only the named pipeline's when given (a shared
    MySQL store holds many pipelines)."""
    runs = store.get_contexts_by_type("pipeline_run")
    if pipeline_name is not None:
        pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
        if pipeline is None:
            return []
        ours = {e.id for e in store.get_executions_by_context(pipeline.id)}
        runs = [r for r in runs
                if any(e.id in ours for e in store.get_executions_by_context(r.id))]
    return sorted(runs, key=lambda c: (c.create_time_since_epoch, c.id))


def execution_nodes(store) -> Dict[int, str]:
    """execution id → node id, over the whole store (one pass; reused across runs)."""
    node_of: Dict[int, str] = {}
    for context in store.get_contexts_by_type("node"):
        for execution in store.get_executions_by_context(context.id):
            node_of[execution.id] = context.name.split(".", 1)[-1]
    return node_of


def node_runs(store, run_context: metadata_store_pb2.Context,
              node_of: Optional[Dict[int, str]] = None) -> Dict[str, NodeRun]:
    """node id → what that node did in the given pipeline run."""
    executions = {e.id: e for e in store.get_executions_by_context(run_context.id)}
    if not executions:
        return {}
    node_of = node_of if node_of is not None else execution_nodes(store)
    events = store.get_events_by_execution_ids(list(executions))
    artifacts = {a.id: a for a in store.get_artifacts_by_id({e.artifact_id for e in events})}
    runs: Dict[str, NodeRun] = {}
    node_ids: Dict[int, str] = {}
    for execution_id, execution in executions.items():
        node_id = node_ids[execution_id] = node_of.get(execution_id,
                                                       execution.name or str(execution_id))
        runs[node_id] = NodeRun(
            node_id=node_id, state=STATE_NAMES.get(execution.last_known_state, "UNKNOWN"),
            seconds=(execution.last_update_time_since_epoch
                     - execution.create_time_since_epoch) / 1000.0,
            outputs={}, inputs={}, execution=execution)
    for event in events:
        run = runs[node_ids[event.execution_id]]
        key = event.path.steps[0].key if event.path.steps else ""
        # INTERNAL_OUTPUT: what a resolver node resolved, under the portable orchestrator.
        side = run.outputs if event.type in (metadata_store_pb2.Event.OUTPUT,
                                             metadata_store_pb2.Event.DECLARED_OUTPUT,
                                             metadata_store_pb2.Event.INTERNAL_OUTPUT) \
            else run.inputs
        if event.artifact_id in artifacts:
            side.setdefault(key, []).append(artifacts[event.artifact_id])
    return runs


def custom(artifact: metadata_store_pb2.Artifact, name: str) -> Optional[object]:
    """A custom property's value (int, double or string), None if absent."""
    return _value(artifact.custom_properties, name)


def _value(properties, name: str) -> Optional[object]:
    if name not in properties:
        return None
    value = properties[name]
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def pushed_version_of(store, model_ids: Iterable[int]) -> Dict[int, str]:
    """model artifact id → the serving version a Pusher put it under (pushed or already
    there), for the models that any Pusher execution received."""
    model_ids = list(model_ids)
    if not model_ids:
        return {}
    pusher_inputs = {}
    for event in store.get_events_by_artifact_ids(model_ids):
        if event.type == metadata_store_pb2.Event.INPUT:
            pusher_inputs.setdefault(event.execution_id, set()).add(event.artifact_id)
    if not pusher_inputs:
        return {}
    outputs = [e for e in store.get_events_by_execution_ids(list(pusher_inputs))
               if e.type == metadata_store_pb2.Event.OUTPUT]
    pushed = {a.id: a for a in store.get_artifacts_by_id({e.artifact_id for e in outputs})}
    found: Dict[int, str] = {}
    for event in outputs:
        artifact = pushed.get(event.artifact_id)
        version = custom(artifact, "pushed_version") if artifact is not None else None
        if version:
            for model_id in pusher_inputs[event.execution_id]:
                found[model_id] = str(version)
    return found
