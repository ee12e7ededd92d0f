"""Version handling as TF Serving's file-system source does it: new versions are picked up
while serving, a broken one never replaces a working one, and old ones unload only after
their in-flight requests are done."""
import gc
import os
import shutil
import threading
import time
import weakref

import grpc
import numpy as np
import pytest

from conftest import export_tiny_model
from serving import protos
from serving.client import GrpcClient, InProcessClient
from serving.errors import CODE_NAMES, ServingError
from serving.manager import AVAILABLE, END, UNLOADING, ModelManager, find_versions
from serving.server import Server
from serving.settings import BatchingParameters


def push(base, model_dir, version):
    """The Pusher's way: copy to a hidden staging folder, then rename it into place."""
    staging = os.path.join(base, f".tmp-{version}-test")
    shutil.copytree(model_dir, staging)
    os.rename(staging, os.path.join(base, str(version)))


def fake_version(base, version, content="ok"):
    path = os.path.join(base, str(version))
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "model.txt"), "w") as f:
        f.write(content)
    return path


class FakeServable:
    def __init__(self, path, version):
        with open(os.path.join(path, "model.txt")) as f:
            if f.read() != "ok":
                raise ValueError(f"{path}: broken model")
        self.path, self.version = path, version

    def close(self):
        pass


class CountingLoader:
    def __init__(self):
        self.calls = []

    def __call__(self, path, version):
        self.calls.append(version)
        return FakeServable(path, version)


def states(manager):
    return {s.version: s.state for s in manager.status("m")}


def served(manager):
    with manager.acquire("m") as servable:
        return servable.version


# --- the manager, with a stand-in loader ----------------------------------------------------

def test_only_integer_directories_are_versions(tmp_path):
    for name in ("3", "12", ".tmp-40-123", "latest", "7.bak", "0x10", "²"):
        os.makedirs(tmp_path / name)
    (tmp_path / "99").write_text("a file, not a version")
    assert list(find_versions(str(tmp_path))) == [3, 12]


def test_latest_policy_moves_to_a_new_version_within_one_poll(tmp_path):
    fake_version(tmp_path, 1)
    manager = ModelManager("m", str(tmp_path), CountingLoader(), poll_seconds=0)
    manager.start()
    assert served(manager) == 1
    fake_version(tmp_path, 2)
    manager.poll()
    assert served(manager) == 2
    assert states(manager) == {2: AVAILABLE, 1: END}
    manager.stop()
    assert states(manager) == {2: END, 1: END}


def test_a_specific_version_policy_ignores_newer_versions(tmp_path):
    for version in (1, 2, 3):
        fake_version(tmp_path, version)
    manager = ModelManager("m", str(tmp_path), CountingLoader(), poll_seconds=0, version=2)
    manager.start()
    assert served(manager) == 2
    with pytest.raises(ServingError) as caught:
        with manager.acquire("m", 3):
            pass
    assert caught.value.code == "NOT_FOUND"
    assert caught.value.message == "Servable not found for request: Specific(m, 3)"
    manager.stop()


def test_a_broken_version_keeps_the_old_one_and_is_retried_when_its_files_change(tmp_path):
    fake_version(tmp_path, 1)
    loader = CountingLoader()
    manager = ModelManager("m", str(tmp_path), loader, poll_seconds=0)
    manager.start()
    fake_version(tmp_path, 2, content="garbage")
    manager.poll()
    manager.poll()
    assert served(manager) == 1
    assert loader.calls == [1, 2]  # not retried while the files stay the same
    [status] = manager.status("m", 2)
    assert (status.state, status.error_code) == (END, "UNKNOWN")
    assert "broken model" in status.error_message
    fake_version(tmp_path, 2, content="ok")
    manager.poll()
    assert served(manager) == 2
    assert states(manager) == {2: AVAILABLE, 1: END}
    manager.stop()


def test_at_start_a_broken_newest_version_falls_back_to_the_next(tmp_path):
    fake_version(tmp_path, 1)
    fake_version(tmp_path, 2, content="garbage")
    manager = ModelManager("m", str(tmp_path), CountingLoader(), poll_seconds=0)
    manager.start()
    assert served(manager) == 1
    assert states(manager) == {2: END, 1: AVAILABLE}
    manager.stop()


def test_an_old_version_unloads_only_after_its_requests_finish(tmp_path):
    fake_version(tmp_path, 1)
    manager = ModelManager("m", str(tmp_path), CountingLoader(), poll_seconds=0)
    manager.start()
    with manager.acquire("m") as old:
        fake_version(tmp_path, 2)
        manager.poll()
        assert states(manager) == {2: AVAILABLE, 1: UNLOADING}
        assert served(manager) == 2
        assert old.version == 1
        released = weakref.ref(old)
    del old
    gc.collect()
    assert states(manager) == {2: AVAILABLE, 1: END}
    assert released() is None  # the manager let go of it
    manager.stop()


def test_removing_versions_rolls_back_then_serves_from_memory(tmp_path):
    fake_version(tmp_path, 1)
    fake_version(tmp_path, 2)
    loader = CountingLoader()
    manager = ModelManager("m", str(tmp_path), loader, poll_seconds=0)
    manager.start()
    shutil.rmtree(tmp_path / "2")
    manager.poll()
    assert served(manager) == 1
    shutil.rmtree(tmp_path / "1")
    manager.poll()
    manager.poll()
    assert served(manager) == 1  # the last version stays, from memory (TF Serving unloads)
    assert states(manager) == {2: END, 1: AVAILABLE}
    assert loader.calls == [2, 1]
    fake_version(tmp_path, 1)  # back on disk: its files are read again
    manager.poll()
    assert served(manager) == 1 and loader.calls == [2, 1, 1]
    manager.stop()


def test_an_unreadable_base_path_changes_nothing(tmp_path):
    base = tmp_path / "models"
    fake_version(base, 1)
    manager = ModelManager("m", str(base), CountingLoader(), poll_seconds=0)
    manager.start()
    shutil.rmtree(base)
    manager.poll()
    assert served(manager) == 1
    manager.stop()


def test_unknown_model_names_are_not_found(tmp_path):
    fake_version(tmp_path, 1)
    manager = ModelManager("m", str(tmp_path), CountingLoader(), poll_seconds=0)
    manager.start()
    with pytest.raises(ServingError) as caught:
        manager.status("other")
    assert caught.value.message == "Could not find any versions of model other"
    manager.stop()


# --- the real server, real models -----------------------------------------------------------

@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory):
    """A second tiny model with other weights: its text tells the versions apart."""
    path = tmp_path_factory.mktemp("second_model") / "model"
    export_tiny_model(path, seed=1)
    return str(path)


def generate_with_version(client):
    inputs = {"prompts": np.array([b"ROMEO:"]), "num_chars": np.array(20, np.int32),
              "temperature": np.array([0.0], np.float32)}  # greedy: the weights decide
    result = client.predict(inputs, "generate")
    return result.version, result.outputs["text"][0]


@pytest.mark.parametrize("batching", [None, BatchingParameters(
    max_batch_size=8, batch_timeout_micros=20_000, num_batch_threads=1, max_enqueued_batches=8)],
    ids=["alone", "batched"])
def test_hot_swap_while_clients_loop(tmp_path, tiny_model_dir, second_model_dir, batching):
    base = tmp_path / "models"
    base.mkdir()
    push(base, tiny_model_dir, 1)
    expected = {1: generate_with_version(InProcessClient(tiny_model_dir))[1],
                2: generate_with_version(InProcessClient(second_model_dir))[1]}
    assert expected[1] != expected[2]
    # Guards against hanging, not timing checks: each wait ends as soon as its condition holds.
    deadline = time.monotonic() + 180
    with Server(str(base), port=0, rest_port=None, poll_seconds=0.2,
                batching=batching) as server, \
            GrpcClient(server.grpc_target) as client:
        results = {0: [], 1: [], 2: [], 3: []}
        failures = []
        stop = threading.Event()

        def loop(worker):
            while not stop.is_set() and len(results[worker]) < 5000:
                try:
                    results[worker].append(generate_with_version(client))
                except ServingError as err:
                    failures.append(err)

        def wait_until(condition):
            while time.monotonic() < deadline and not condition():
                time.sleep(0.05)

        workers = [threading.Thread(target=loop, args=(w,)) for w in results]
        for worker in workers:
            worker.start()
        wait_until(lambda: all(len(answers) >= 3 for answers in results.values()))
        push(base, second_model_dir, 2)
        wait_until(lambda: all(v == 2 for answers in results.values() for v, _ in answers[-3:]))
        stop.set()
        for worker in workers:
            worker.join()
        statuses = {s.version: s.state for s in server.manager.status("textgen")}

    assert not failures
    for worker, answers in results.items():
        versions = [version for version, _ in answers]
        assert versions[0] == 1 and versions[-1] == 2, worker
        assert versions == sorted(versions), "a client went back to the old version"
        assert all(text == expected[version] for version, text in answers)
    assert statuses == {2: AVAILABLE, 1: END}


def test_a_corrupt_push_keeps_the_old_version_serving_and_status_says_why(tmp_path,
                                                                           tiny_model_dir):
    base = tmp_path / "models"
    base.mkdir()
    push(base, tiny_model_dir, 1)
    with Server(str(base), port=0, rest_port=0, poll_seconds=0) as server, \
            grpc.insecure_channel(server.grpc_target) as channel, \
            GrpcClient(server.grpc_target) as client:
        staging = base / ".tmp-2"
        shutil.copytree(tiny_model_dir, staging)
        (staging / "saved_model.pb").write_bytes(b"\x08this is not a SavedModel")
        os.rename(staging, base / "2")
        server.manager.poll()

        stub = protos.model_service_pb2_grpc.ModelServiceStub(channel)
        request = protos.get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "textgen"
        by_version = {s.version: s for s in stub.GetModelStatus(request).model_version_status}
        state = protos.get_model_status_pb2.ModelVersionStatus.State
        assert state.Name(by_version[1].state) == "AVAILABLE"
        assert state.Name(by_version[2].state) == "END"
        assert by_version[2].status.error_code == CODE_NAMES.index("DATA_LOSS")
        assert "2/saved_model.pb: not a SavedModel" in by_version[2].status.error_message
        assert generate_with_version(client)[0] == 1

        # Replacing the files makes the server try version 2 again.
        shutil.rmtree(base / "2")
        shutil.copytree(tiny_model_dir, base / "2")
        server.manager.poll()
        assert generate_with_version(client)[0] == 2
