"""Clients and the command line: the gRPC, REST and in-process clients agree with each other
and with the model; `textgen generate` and `textgen serve` behave as documented."""
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from serving.client import GrpcClient, InProcessClient, RestClient, resolve_model_dir, step_seed
from serving.errors import ServingError
from serving.server import Server
import textgen_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
UTF8_ENV = {**os.environ, "PYTHONIOENCODING": "utf-8"}


@pytest.fixture(scope="module")
def server(tiny_serving_dir):
    with Server(tiny_serving_dir, port=0, rest_port=0, poll_seconds=0) as running:
        yield running


@pytest.fixture(scope="module")
def clients(server, tiny_serving_dir):
    made = {"grpc": GrpcClient(server.grpc_target), "rest": RestClient(server.rest_url),
            "in-process": InProcessClient(tiny_serving_dir)}
    yield made
    for client in made.values():
        client.close()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the client library ---------------------------------------------------------------------

def test_every_backend_generates_the_same_text(clients):
    texts = {name: client.generate(["ROMEO:", "hé"], 40, [0.8, 1.1], top_k=4, top_p=0.95,
                                   seed=7)
             for name, client in clients.items()}
    assert texts["grpc"] == texts["rest"] == texts["in-process"]
    for prompt, text in zip(["ROMEO:", "hé"], texts["grpc"], strict=True):
        assert text.startswith(prompt) and len(text) == len(prompt) + 40


def test_every_backend_streams_what_the_one_step_signature_gives(clients, tiny_model_dir):
    import tensorflow as tf
    streams = {name: list(client.stream("ROMEO:", 30, temperature=0.9, seed=5))
               for name, client in clients.items()}
    assert streams["grpc"] == streams["rest"] == streams["in-process"]

    one_step = tf.saved_model.load(tiny_model_dir).signatures["serving_default"]
    chars, states, expected = "ROMEO:", tf.zeros([1, 16]), []
    for step in range(30):
        result = one_step(chars=tf.constant([chars]), states=states,
                          temperature=tf.constant([0.9]), seed=tf.constant([step_seed(5, step)]))
        chars, states = result["next_chars"].numpy()[0].decode(), result["states"]
        expected.append(chars)
    assert streams["grpc"] == expected


def test_stream_carries_each_answer_into_the_next_call(server):
    calls = []

    class Recording(GrpcClient):
        def predict(self, inputs, signature_name="serving_default"):
            result = super().predict(inputs, signature_name)
            calls.append((inputs, result.outputs))
            return result

    with Recording(server.grpc_target) as client:
        streamed = list(client.stream("ROMEO:", 5, temperature=1.0, seed=0))
    assert calls[0][0]["chars"][0] == b"ROMEO:"
    assert not calls[0][0]["states"].any()
    for step in range(1, len(calls)):
        sent, previous_answer = calls[step][0], calls[step - 1][1]
        assert sent["chars"][0] == previous_answer["next_chars"][0]
        np.testing.assert_array_equal(sent["states"], previous_answer["states"])
    assert streamed == [outputs["next_chars"][0].decode() for _, outputs in calls]


def test_seed_zero_draws_a_new_sample_each_time(clients):
    first, second = (clients["grpc"].generate(["ROMEO:"], 40, 1.0, seed=0)[0] for _ in range(2))
    assert first != second


def test_every_backend_reports_the_same_rejection(clients):
    errors = {}
    for name, client in clients.items():
        with pytest.raises(ServingError) as caught:
            client.generate(["ROMEO:"], 10_001)
        errors[name] = (caught.value.code, caught.value.message)
    assert errors["grpc"] == errors["rest"] == errors["in-process"]
    assert errors["grpc"][0] == "INVALID_ARGUMENT" and "num_chars" in errors["grpc"][1]


@pytest.mark.parametrize("client_class, address", [(GrpcClient, "127.0.0.1:{}"),
                                                   (RestClient, "http://127.0.0.1:{}")])
def test_an_unreachable_server_is_unavailable(client_class, address):
    address = address.format(free_port())
    with client_class(address, timeout=30) as client, pytest.raises(ServingError) as caught:
        client.generate(["ROMEO:"], 5)
    assert caught.value.code == "UNAVAILABLE"
    assert f"cannot reach {address}" in caught.value.message


@pytest.mark.parametrize("client_class, address", [(GrpcClient, "127.0.0.1:{}"),
                                                   (RestClient, "http://127.0.0.1:{}")])
def test_a_server_that_never_answers_exceeds_the_deadline(client_class, address):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = address.format(silent.getsockname()[1])
        with client_class(address, timeout=0.5) as client, \
                pytest.raises(ServingError) as caught:
            client.generate(["ROMEO:"], 5)
    assert caught.value.code == "DEADLINE_EXCEEDED"


def test_model_dir_resolution(tmp_path, tiny_model_dir):
    base = tmp_path / "serving"
    base.mkdir()
    for version in (3, 12):
        os.symlink(tiny_model_dir, base / str(version))
    (base / ".tmp-40-1").mkdir()
    assert resolve_model_dir(str(base)) == (str(base / "12"), 12)
    assert resolve_model_dir(str(base), 3) == (str(base / "3"), 3)
    assert resolve_model_dir(str(base / "3")) == (str(base / "3"), 3)
    with pytest.raises(ServingError, match="has no version 5 \\(it has 3, 12\\)"):
        resolve_model_dir(str(base), 5)
    with pytest.raises(ServingError, match="holds no SavedModel"):
        resolve_model_dir(str(tmp_path / "serving" / ".tmp-40-1"))


def test_clients_and_help_do_not_import_tensorflow():
    script = ("import sys\n"
              "import textgen_cli\n"
              "textgen_cli.build_parser()\n"
              "assert not {'tensorflow', 'grpc'} & set(sys.modules), 'help imports too much'\n"
              "from serving.client import GrpcClient, RestClient\n"
              "GrpcClient('127.0.0.1:1').close()\n"
              "assert 'tensorflow' not in sys.modules, 'the gRPC client imports TensorFlow'\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# --- textgen generate -----------------------------------------------------------------------

def run_cli(capsys, *argv):
    code = textgen_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_prints_the_same_text_twice_with_a_seed(server, clients, capsys):
    argv = ["generate", "--server", server.grpc_target, "--prompt", "ROMEO:", "--num-chars",
            "60", "--seed", "7"]
    first, second = run_cli(capsys, *argv), run_cli(capsys, *argv)
    assert first == second
    expected = clients["grpc"].generate(["ROMEO:"], 60, 0.8, seed=7)[0]
    assert first == (0, expected + "\n", "")


def test_generate_streams_over_rest(server, clients, capsys):
    code, out, _ = run_cli(capsys, "generate", "--rest", server.rest_url, "--stream", "--prompt",
                           "ab", "--num-chars", "25", "--temperature", "1.0", "--seed", "3")
    assert code == 0
    assert out == "ab" + "".join(clients["rest"].stream("ab", 25, 1.0, seed=3)) + "\n"


def test_generate_draws_several_samples_in_process(tiny_serving_dir, clients, capsys):
    code, out, _ = run_cli(capsys, "generate", "--model-dir", tiny_serving_dir, "--num-samples",
                           "3", "--num-chars", "20", "--top-k", "3", "--seed", "9")
    assert code == 0
    samples = re.split(r"\n?--- sample \d of 3 ---\n", out)[1:]
    expected = clients["grpc"].generate(["ROMEO:"] * 3, 20, 0.8, top_k=3, seed=9)
    assert [s.rstrip("\n") for s in samples] == expected


@pytest.mark.parametrize("args, message", [
    (["--prompt", ""], "--prompt is empty"),
    (["--num-chars", "-1"], "--num-chars -1"),
    (["--temperature", "-0.1"], "--temperature -0.1"),
    (["--temperature", "nan"], "--temperature nan"),
    (["--top-k", "-1"], "--top-k -1"),
    (["--top-p", "0"], "--top-p 0.0"),
    (["--top-p", "1.5"], "--top-p 1.5"),
    (["--seed", str(2**31)], "32-bit"),
    (["--num-samples", "0"], "--num-samples 0"),
    (["--stream", "--top-k", "3"], "--stream drives the one-step signature"),
    (["--stream", "--num-samples", "2"], "drop --num-samples"),
    (["--server", "localhost"], "expected HOST:PORT"),
    (["--rest", "localhost:8501"], "expected a URL"),
    (["--model-name", "../x"], "--model-name '../x'"),
    (["--model-dir", "/no/such/dir"], "not a directory"),
])
def test_generate_rejects_bad_flags_with_exit_2(capsys, args, message):
    code, out, err = run_cli(capsys, "generate", *args)
    assert code == 2 and out == ""
    assert err.startswith("textgen: error: ") and message in err and err.count("\n") == 1


def test_generate_exits_2_when_the_server_rejects_the_request(server, capsys):
    code, _, err = run_cli(capsys, "generate", "--server", server.grpc_target, "--num-chars",
                           "20000")
    assert code == 2
    assert "INVALID_ARGUMENT" in err and "num_chars" in err and "10000" in err


def test_generate_exits_1_when_no_server_answers(capsys):
    code, _, err = run_cli(capsys, "generate", "--server", f"127.0.0.1:{free_port()}",
                           "--timeout", "30")
    assert code == 1 and "UNAVAILABLE" in err and "cannot reach" in err


# --- textgen serve --------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--model-dir", "/no/such/dir"], "not a directory"),
    (["--port", "70000"], "--port 70000"),
    (["--port", "9000", "--rest-port", "9000"], "different ports"),
    (["--poll-seconds", "-1"], "--poll-seconds -1"),
    (["--max-num-chars", "0"], "--max-num-chars 0"),
    (["--model-name", "a/b"], "--model-name 'a/b'"),
    (["--version", "-3"], "--version -3"),
])
def test_serve_rejects_bad_flags_with_exit_2(tiny_serving_dir, capsys, args, message):
    argv = ["serve", "--model-dir", tiny_serving_dir, *args] if args[0] != "--model-dir" \
        else ["serve", *args]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err


def test_serve_refuses_a_bare_savedmodel(tiny_model_dir, capsys):
    code, _, err = run_cli(capsys, "serve", "--model-dir", tiny_model_dir)
    assert code == 2 and "is a SavedModel itself" in err


def test_serve_and_generate_commands_end_to_end(tmp_path, tiny_model_dir):
    """`textgen serve` in its own process; `textgen generate` and curl-like HTTP against it."""
    base = tmp_path / "pushed"
    shutil.copytree(tiny_model_dir, base / "1")
    serve = subprocess.Popen(
        [os.path.join(BIN, "textgen"), "serve", "--model-dir", str(base), "--port", "0",
         "--rest-port", "0", "-v"], stderr=subprocess.PIPE, text=True, encoding="utf-8",
        errors="replace", env=UTF8_ENV)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in serve.stderr],
                     daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 300  # the server imports TensorFlow first
        while not any("Ctrl-C stops" in line for line in seen) and time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                assert serve.poll() is None, "".join(seen)
        banner = next(line for line in seen if "Ctrl-C stops" in line)
        assert "(version 1)" in banner
        grpc_target = re.search(r"gRPC (127\.0\.0\.1:\d+)", banner).group(1)
        rest_url = re.search(r"REST (http://127\.0\.0\.1:\d+)", banner).group(1)

        generate = [os.path.join(BIN, "textgen"), "generate", "--server", grpc_target,
                    "--prompt", "ROMEO:", "--num-chars", "80", "--seed", "7"]
        runs = [subprocess.run(generate, capture_output=True, text=True, encoding="utf-8",
                               env=UTF8_ENV, timeout=120) for _ in range(2)]
        assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
        assert runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith("ROMEO:")
        assert len(runs[0].stdout) == len("ROMEO:") + 80 + 1

        body = json.dumps({"instances": [{"chars": "ROMEO:", "states": [0.0] * 16,
                                          "temperature": 0.8}]}).encode()
        with urllib.request.urlopen(urllib.request.Request(
                f"{rest_url}/v1/models/textgen:predict", data=body), timeout=60) as response:
            [prediction] = json.loads(response.read())["predictions"]
        assert len(prediction["next_chars"]) == 1 and len(prediction["states"]) == 16
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=60)
    time.sleep(0.2)
    while not lines.empty():
        seen.append(lines.get())
    log = "".join(seen)
    assert code == 0, log
    assert "stopping" in log
    assert "GRPC Predict model=textgen version=1 signature=generate -> OK" in log
    assert "REST Predict model=textgen version=1 signature=serving_default" in log
