"""`textgen serve` and `textgen generate` (textgen_cli.py dispatches to them).

Nothing here imports TensorFlow or gRPC at module level (`textgen --help` stays instant);
`serve` loads TensorFlow when it starts, `generate --server/--rest` never does.
"""
import argparse
import logging
import math
import os
import re
import signal
import sys
import threading
from urllib.parse import urlsplit

from models.settings import DEFAULT_SAMPLING, broken_sampling_rule
from pipeline.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CliError
from serving.settings import (DEFAULT_CLIENT_TIMEOUT, DEFAULT_GRPC_PORT, DEFAULT_HOST,
                              DEFAULT_LIMITS, DEFAULT_MAX_MESSAGE_MB, DEFAULT_MODEL_NAME,
                              DEFAULT_POLL_SECONDS, DEFAULT_REST_PORT, GENERATE_CHUNK_CHARS)


# Addressable in a REST path and never a filesystem path (no "/", no "..").
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):([0-9]{1,5})")
# Server-side request errors that mean "fix the command", as opposed to "fix the server".
_BAD_REQUEST_CODES = {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND", "OUT_OF_RANGE"}


def add_parsers(subparsers) -> None:
    _add_serve_parser(subparsers)
    _add_generate_parser(subparsers)


def _add_serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve pushed models over TF Serving's gRPC and REST APIs",
        description="A TF-Serving-compatible server for the versions in the Pusher's directory "
                    "(<model-dir>/<version>/): gRPC PredictionService and ModelService, the REST "
                    "API, and Prometheus metrics at /monitoring/prometheus/metrics on the REST "
                    "port. New versions are picked up while serving. For production on a GPU "
                    "use tensorflow_model_server (see deploy/README.md).")
    p.add_argument("--model-dir", required=True,
                   help="the serving directory with <version>/ SavedModels (--serving-dir of "
                        "`textgen run`)")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME,
                   help="the name requests use, as TF Serving's --model_name "
                        f"(default {DEFAULT_MODEL_NAME})")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for all "
                        "interfaces)")
    p.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT,
                   help=f"gRPC port (default {DEFAULT_GRPC_PORT}; 0 picks a free one)")
    p.add_argument("--rest-port", type=int, default=DEFAULT_REST_PORT,
                   help=f"REST port (default {DEFAULT_REST_PORT}; 0 picks a free one)")
    p.add_argument("--no-rest", action="store_true", help="serve gRPC only")
    p.add_argument("--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS,
                   help="how often to look for new versions (default "
                        f"{DEFAULT_POLL_SECONDS:g}; 0 only at start)")
    p.add_argument("--version", type=int, default=None,
                   help="serve only this version (default: always the latest)")
    p.add_argument("--max-num-chars", type=int, default=DEFAULT_LIMITS.max_num_chars,
                   help="largest num_chars one request may ask for (default "
                        f"{DEFAULT_LIMITS.max_num_chars})")
    p.add_argument("--max-batch-chars", type=int, default=DEFAULT_LIMITS.max_batch_chars,
                   help="largest rows × (longest prompt + num_chars) one request may ask for: "
                        f"the characters the model steps through (default "
                        f"{DEFAULT_LIMITS.max_batch_chars})")
    p.add_argument("--request-timeout", type=float, default=DEFAULT_LIMITS.request_timeout,
                   help="seconds a request may run in the model before it is cancelled with "
                        f"DEADLINE_EXCEEDED (default {DEFAULT_LIMITS.request_timeout:g}; a gRPC "
                        "client's deadline cuts it earlier)")
    p.add_argument("--max-message-mb", type=float, default=DEFAULT_MAX_MESSAGE_MB,
                   help=f"largest gRPC message / REST body in MiB (default "
                        f"{DEFAULT_MAX_MESSAGE_MB})")
    p.add_argument("--enable_batching", "--enable-batching", nargs="?", const=True,
                   default=True, type=_true_or_false, metavar="true|false",
                   help="merge concurrent requests to a signature into one model call, as "
                        "tensorflow_model_server --enable_batching does (on by default here, "
                        "off there); --enable_batching=false or --no-batching turns it off")
    p.add_argument("--no-batching", dest="enable_batching", action="store_false",
                   help="run each request on its own")
    p.add_argument("--batching_parameters_file", "--batching-parameters-file", metavar="FILE",
                   help="TF Serving's BatchingParameters in protobuf text format (e.g. "
                        "deploy/config/batching.config: max_batch_size, batch_timeout_micros, "
                        "num_batch_threads, max_enqueued_batches; a field left out takes TF "
                        "Serving's default); without it, the parameters of "
                        "deploy/config/batching.config")
    p.add_argument("--generate-chunk", type=int, default=GENERATE_CHUNK_CHARS, metavar="N",
                   help="with batching, concurrent generate requests share the model's steps "
                        "in rounds of at most N characters: a request joins the running ones "
                        "at the next round and is answered when its rows are done (default "
                        f"{GENERATE_CHUNK_CHARS}); 0 merges whole requests, as TF Serving does")
    p.add_argument("--threads", type=int, default=None,
                   help="request threads per protocol (default 4 per CPU, plus "
                        "max_batch_size with --enable_batching: a request waits in its batch "
                        "on its thread, so fewer threads would cap every batch)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log one line per request (debug level)")
    p.set_defaults(func=cmd_serve)


def _add_generate_parser(sub) -> None:
    p = sub.add_parser(
        "generate", help="generate text from a served model (or a model directory)",
        description="Generates text through TF Serving's Predict API: the `generate` signature, "
                    "or with --stream the one-step signature, character by character. Works "
                    "against `textgen serve` and tensorflow_model_server alike.")
    sampling = DEFAULT_SAMPLING
    p.add_argument("--prompt", default=sampling.prompt,
                   help=f"text to continue (default {sampling.prompt})")
    p.add_argument("--num-chars", type=int, default=sampling.num_chars,
                   help=f"characters to generate (default {sampling.num_chars})")
    p.add_argument("--temperature", type=float, default=sampling.temperature,
                   help="sampling temperature; 0 = always the most likely character "
                        f"(default {sampling.temperature:g})")
    p.add_argument("--top-k", type=int, default=sampling.top_k,
                   help="sample among the k most likely characters only (default "
                        f"{sampling.top_k}; 0 = off)")
    p.add_argument("--top-p", type=float, default=sampling.top_p,
                   help="sample among the most likely characters holding this probability "
                        f"mass (default {sampling.top_p:g}; 1 = off)")
    p.add_argument("--seed", type=int, default=sampling.seed,
                   help=f"nonzero: reproducible samples; 0: random (default {sampling.seed})")
    p.add_argument("--num-samples", type=int, default=1, help="samples to draw (default 1)")
    p.add_argument("--stream", action="store_true",
                   help="print characters as they are generated (one-step signature, one "
                        "sample, temperature only)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--server", metavar="HOST:PORT",
                       help="gRPC address of textgen serve / TF Serving (default "
                            f"localhost:{DEFAULT_GRPC_PORT})")
    where.add_argument("--rest", metavar="URL",
                       help="REST base URL instead of gRPC, e.g. "
                            f"http://localhost:{DEFAULT_REST_PORT}")
    where.add_argument("--model-dir", metavar="DIR",
                       help="run in this process from a SavedModel or serving directory "
                            "(loads TensorFlow; no server needed)")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME,
                   help=f"served model name (default {DEFAULT_MODEL_NAME})")
    p.add_argument("--version", type=int, default=None,
                   help="ask for this model version (default: the latest served)")
    p.add_argument("--timeout", type=float, default=DEFAULT_CLIENT_TIMEOUT,
                   help=f"seconds to wait for one call (default {DEFAULT_CLIENT_TIMEOUT:g})")
    p.set_defaults(func=cmd_generate)


def _check_model_name(name: str) -> None:
    if not _MODEL_NAME.fullmatch(name):
        raise CliError(f"--model-name {name!r}: use letters, digits, '_', '.', '-' (it appears "
                         "in REST paths)")


def _check_version(version) -> None:
    if version is not None and version < 0:
        raise CliError(f"--version {version}: versions are numbers >= 0")


# --- textgen serve ----------------------------------------------------------------------

def _check_serve_args(args) -> None:
    _check_model_name(args.model_name)
    _check_version(args.version)
    model_dir = args.model_dir
    if not os.path.isdir(model_dir):
        raise CliError(f"--model-dir {model_dir}: not a directory; pass the serving directory "
                         "that `textgen run --serving-dir` pushes to")
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        raise CliError(f"--model-dir {model_dir} is a SavedModel itself; serving wants its "
                         f"parent in TF Serving's layout <dir>/<version>/ (e.g. move it to "
                         f"{os.path.join(model_dir, '1')}/ or pass the parent)")
    for flag, port in (("--port", args.port), ("--rest-port", args.rest_port)):
        if not 0 <= port <= 65535:
            raise CliError(f"{flag} {port}: ports are 0..65535 (0 picks a free one)")
    if not args.no_rest and args.rest_port == args.port != 0:
        raise CliError(f"--port and --rest-port are both {args.port}: gRPC and REST need "
                         "different ports")
    if not (math.isfinite(args.poll_seconds) and args.poll_seconds >= 0):
        raise CliError(f"--poll-seconds {args.poll_seconds}: give a number >= 0")
    if args.max_num_chars < 1:
        raise CliError(f"--max-num-chars {args.max_num_chars}: give a positive number")
    if args.max_batch_chars < 1:
        raise CliError(f"--max-batch-chars {args.max_batch_chars}: give a positive number")
    if not (math.isfinite(args.request_timeout) and args.request_timeout > 0):
        raise CliError(f"--request-timeout {args.request_timeout}: give a positive number "
                         "of seconds")
    if not (math.isfinite(args.max_message_mb) and args.max_message_mb > 0):
        raise CliError(f"--max-message-mb {args.max_message_mb}: give a positive number")
    if args.generate_chunk < 0:
        raise CliError(f"--generate-chunk {args.generate_chunk}: give a number >= 0")
    if args.threads is not None and args.threads < 1:
        raise CliError(f"--threads {args.threads}: give a positive number")
    if args.batching_parameters_file and not args.enable_batching:
        raise CliError("--batching_parameters_file needs batching on: drop "
                       "--no-batching / --enable_batching=false")


def _true_or_false(value: str) -> bool:
    """TF Serving's boolean flag values (--enable_batching=false)."""
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: give true or false")


def _batching_parameters(args):
    """The BatchingParameters to serve with, or None with batching off."""
    from serving import settings
    if not args.enable_batching:
        return None
    if not args.batching_parameters_file:
        return settings.SERVE_BATCHING
    try:
        parameters, ignored = settings.read_batching_parameters(args.batching_parameters_file)
    except ValueError as err:
        raise CliError(f"--batching_parameters_file {err}") from None
    if ignored:
        logging.getLogger("textgen.serving").info(
            "batching: %s in %s only matter to tensorflow_model_server; not used here",
            ", ".join(ignored), args.batching_parameters_file)
    return parameters


def _setup_serve_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("textgen.serving").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_serve(args) -> int:
    _check_serve_args(args)
    _setup_serve_logging(args.verbose)
    batching = _batching_parameters(args)
    try:
        from serving import server as server_lib, settings  # TensorFlow loads here
        server = server_lib.Server(
            os.path.abspath(args.model_dir), model_name=args.model_name, host=args.host,
            port=args.port, rest_port=None if args.no_rest else args.rest_port,
            poll_seconds=args.poll_seconds, version=args.version,
            limits=settings.Limits(max_num_chars=args.max_num_chars,
                                   max_batch_chars=args.max_batch_chars,
                                   request_timeout=args.request_timeout),
            max_message_bytes=int(args.max_message_mb * (1 << 20)), num_threads=args.threads,
            batching=batching, generate_chunk=args.generate_chunk)
        server.start()
    except OSError as err:
        raise CliError(f"{err.strerror or err}; choose other ports with --port/--rest-port "
                         "(0 picks free ones)") from None
    except KeyboardInterrupt:
        print("textgen serve: interrupted while starting", file=sys.stderr)
        return EXIT_INTERRUPTED
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    served = server.manager.served_versions()
    version = f"version {served[-1]}" if served else "no usable version yet"
    rest = f" and REST {server.rest_url}" if server.rest_url else ""
    polling = f"polling every {args.poll_seconds:g} s" if args.poll_seconds else "not polling"
    batched = "" if batching is None else (
        f"; batching up to {batching.max_batch_size} rows, {batching.batch_timeout_micros} µs, "
        f"{batching.num_batch_threads} threads")
    print(f"textgen serve: model {args.model_name!r} ({version}) from {server.model_dir} on "
          f"gRPC {server.grpc_target}{rest}; {polling}{batched}. Ctrl-C stops.",
          file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    print("textgen serve: stopping (in-flight requests finish first)", file=sys.stderr, flush=True)
    server.stop()
    return EXIT_OK


# --- textgen generate -------------------------------------------------------------------

def _check_generate_args(args) -> None:
    _check_model_name(args.model_name)
    _check_version(args.version)
    if not args.prompt:
        raise CliError("--prompt is empty: give at least one character to continue")
    broken = broken_sampling_rule(num_chars=args.num_chars, temperature=args.temperature,
                                  top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if broken:
        name, value, rule = broken
        raise CliError(f"--{name.replace('_', '-')} {value}: give {rule.text}")
    if args.num_samples < 1:
        raise CliError(f"--num-samples {args.num_samples}: give a number >= 1")
    if args.stream and (args.top_k or args.top_p != 1.0):
        raise CliError("--top-k/--top-p need the generate signature; --stream drives the "
                         "one-step signature, which samples with --temperature only")
    if args.stream and args.num_samples != 1:
        raise CliError("--stream prints one sample as it is generated: drop --num-samples")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise CliError(f"--timeout {args.timeout}: give a positive number of seconds")
    if args.server and not _HOST_PORT.fullmatch(args.server):
        raise CliError(f"--server {args.server}: expected HOST:PORT, e.g. "
                         f"localhost:{DEFAULT_GRPC_PORT}")
    if args.rest and urlsplit(args.rest).scheme not in ("http", "https"):
        raise CliError(f"--rest {args.rest}: expected a URL such as "
                         f"http://localhost:{DEFAULT_REST_PORT}")
    if args.model_dir and not os.path.isdir(args.model_dir):
        raise CliError(f"--model-dir {args.model_dir}: not a directory")


def cmd_generate(args) -> int:
    _check_generate_args(args)
    from serving import client as client_lib
    from serving.errors import ServingError
    server = args.server or (None if args.rest or args.model_dir else
                             f"localhost:{DEFAULT_GRPC_PORT}")
    try:
        with client_lib.connect(server, args.rest, args.model_dir, args.model_name,
                                args.version, args.timeout) as client:
            if args.stream:
                print(args.prompt, end="", flush=True)
                for char in client.stream(args.prompt, args.num_chars, args.temperature,
                                          args.seed):
                    print(char, end="", flush=True)
                print()
                return EXIT_OK
            texts = client.generate([args.prompt] * args.num_samples, args.num_chars,
                                    args.temperature, args.top_k, args.top_p, args.seed)
    except ServingError as err:
        if args.stream:
            print()
        if err.code in _BAD_REQUEST_CODES:
            raise CliError(f"{err.code}: {err.message}") from None
        print(f"textgen: error: {err.code}: {err.message}", file=sys.stderr)
        return EXIT_FAILED
    for index, text in enumerate(texts):
        if len(texts) > 1:
            print(("\n" if index else "") + f"--- sample {index + 1} of {len(texts)} ---")
        print(text)
    return EXIT_OK
