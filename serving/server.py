"""The local TF-Serving-compatible model server: gRPC on one port, REST on another, over
the versions of one model; this module starts and stops them (the APIs are
serving/grpc_api.py and serving/rest_api.py, what they share serving/core.py).
"""
import errno
import logging
import os
import threading
from concurrent import futures
from typing import Optional

import grpc

from serving import grpc_api, protos, rest_api
from serving.core import ServingCore
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.servable import Servable
from serving.settings import (DEFAULT_GRPC_PORT, DEFAULT_HOST, DEFAULT_LIMITS,
                              DEFAULT_MAX_MESSAGE_MB, DEFAULT_MODEL_NAME, DEFAULT_POLL_SECONDS,
                              DEFAULT_REST_PORT, GENERATE_CHUNK_CHARS, BatchingParameters,
                              Limits)

logger = logging.getLogger("textgen.serving")


def default_threads(batching: Optional[BatchingParameters]) -> int:
    """Request threads per protocol: TF Serving's 4 per CPU, plus max_batch_size with
    batching on. A request waits on its thread until its batch is answered (TF Serving's
    do too), so with fewer threads than max_batch_size no batch could fill: on 2 CPUs, 16
    concurrent streams would run as two batches of 8. A waiting thread costs no CPU."""
    return 4 * (os.cpu_count() or 1) + (batching.max_batch_size if batching else 0)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    """A TF-Serving-compatible server for the versions of one model under `model_dir`.

    Args:
      model_dir: the base path holding <version>/ SavedModels (the Pusher's directory).
      port, rest_port: 0 picks a free port; rest_port None disables REST.
      poll_seconds: how often model_dir is polled for versions (0: only at start).
      version: serve this version only (None: the latest).
      limits: server-side bounds on requests (num_chars, batch × characters, run time).
      max_message_bytes: largest gRPC message and REST body accepted or sent.
      num_threads: request threads per protocol (None: `default_threads(batching)`).
      batching: merge concurrent requests (TF Serving's --enable_batching); None: off.
      generate_chunk: with batching, `generate` requests share the model's steps in rounds
        of at most this many characters (serving/stepping.py); 0 merges whole requests,
        as TF Serving does.
    """

    def __init__(self, model_dir: str, model_name: str = DEFAULT_MODEL_NAME,
                 host: str = DEFAULT_HOST, port: int = DEFAULT_GRPC_PORT,
                 rest_port: Optional[int] = DEFAULT_REST_PORT,
                 poll_seconds: float = DEFAULT_POLL_SECONDS, version: Optional[int] = None,
                 limits: Limits = DEFAULT_LIMITS,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_MB << 20,
                 num_threads: Optional[int] = None,
                 batching: Optional[BatchingParameters] = None,
                 generate_chunk: int = GENERATE_CHUNK_CHARS):
        self.model_dir = model_dir
        self.model_name = model_name
        self.host = host
        self.port = port
        self.rest_port = rest_port
        self.metrics = Metrics()
        self.batching = batching
        self.manager = ModelManager(
            model_name, model_dir,
            lambda path, number: Servable(path, number, batching, generate_chunk),
            poll_seconds, version, on_load_attempt=self.metrics.count_load)
        self.core = ServingCore(self.manager, limits, self.metrics)
        self._max_message_bytes = max_message_bytes
        self._num_threads = num_threads or default_threads(batching)
        self._grpc = None
        self._http = None
        self._http_pool = None

    @property
    def grpc_target(self) -> str:
        return _host_port(self.host, self.port)

    @property
    def rest_url(self) -> Optional[str]:
        return None if self.rest_port is None else f"http://{_host_port(self.host, self.rest_port)}"

    def start(self) -> "Server":
        """Loads the model, then listens; OSError if a port cannot be bound."""
        self.manager.start()
        try:
            self._start_grpc()
            if self.rest_port is not None:
                self._start_rest()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_grpc(self) -> None:
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(self._num_threads, thread_name_prefix="grpc"),
            interceptors=[grpc_api.ParseErrorInterceptor(self.core)],
            options=[("grpc.so_reuseport", 0),  # a second server must not share the port
                     ("grpc.max_receive_message_length", self._max_message_bytes),
                     ("grpc.max_send_message_length", self._max_message_bytes)])
        protos.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            grpc_api.PredictionServicer(self.core, self._max_message_bytes), self._grpc)
        protos.model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            grpc_api.ModelServicer(self.core), self._grpc)
        try:
            self.port = self._grpc.add_insecure_port(_host_port(self.host, self.port))
        except RuntimeError:
            raise OSError(errno.EADDRINUSE, f"cannot listen on {self.grpc_target} for gRPC "
                          "(in use, or not an address of this machine)") from None
        self._grpc.start()

    def _start_rest(self) -> None:
        self._http_pool = futures.ThreadPoolExecutor(self._num_threads, thread_name_prefix="rest")
        try:
            self._http = rest_api.PooledHTTPServer((self.host, self.rest_port), self.core,
                                           self._http_pool, self._max_message_bytes)
        except OSError as err:
            raise OSError(err.errno, f"cannot listen on {_host_port(self.host, self.rest_port)} "
                          f"for REST ({err.strerror})") from None
        self.rest_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="rest-accept", daemon=True).start()

    def stop(self, grace: float = 5.0) -> None:
        """Stops listening, lets in-flight requests finish (up to `grace` s), unloads."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_pool is not None:
            self._http_pool.shutdown(wait=True)
            self._http_pool = None
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
            self._grpc = None
        self.core.watchdog.close()
        self.manager.stop()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
