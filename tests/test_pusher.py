"""The Pusher's copy: atomic, numbered like TF Serving expects, never twice the same model,
also while readers poll the serving directory and while another pipeline root pushes."""
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from components import pusher
from conftest import REPO, export_tiny_model


def make_model(path, content=b"graph"):
    os.makedirs(os.path.join(path, "variables"))
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(content)
    with open(os.path.join(path, "variables", "variables.index"), "wb") as f:
        f.write(b"index")
    return str(path)


def test_push_creates_a_numbered_version_with_a_record(tmp_path):
    model = make_model(tmp_path / "m1")
    result = pusher.push(model, str(tmp_path / "serving"), {"model_id": 1})
    assert result["pushed"]
    assert os.listdir(tmp_path / "serving") == [str(result["version"])]
    version_dir = tmp_path / "serving" / str(result["version"])
    assert (version_dir / "saved_model.pb").read_bytes() == b"graph"
    assert (version_dir / "assets.extra" / "textgen_push.json").exists()


def test_the_same_model_is_not_pushed_twice(tmp_path):
    serving = str(tmp_path / "serving")
    first = pusher.push(make_model(tmp_path / "a"), serving, {})
    again = pusher.push(make_model(tmp_path / "b"), serving, {})  # same bytes, other place
    assert not again["pushed"] and again["version"] == first["version"]
    assert pusher.versions(serving) == [first["version"]]


def test_a_new_model_gets_a_higher_version(tmp_path):
    serving = str(tmp_path / "serving")
    first = pusher.push(make_model(tmp_path / "a"), serving, {})
    second = pusher.push(make_model(tmp_path / "b", b"other graph"), serving, {})
    assert second["pushed"] and second["version"] > first["version"]
    assert pusher.versions(serving) == [first["version"], second["version"]]


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_leftovers_of_a_killed_push_are_removed_and_never_look_like_versions(tmp_path):
    serving = tmp_path / "serving"
    os.makedirs(serving / f".tmp-123-{socket.gethostname()}-{dead_pid()}" / "variables")
    assert pusher.versions(str(serving)) == []
    pusher.push(make_model(tmp_path / "a"), str(serving), {})
    assert not any(n.startswith(".tmp-") for n in os.listdir(serving))


def test_temporaries_of_live_pushes_and_other_hosts_are_kept(tmp_path):
    serving = tmp_path / "serving"
    live = serving / f".tmp-123-{socket.gethostname()}-{os.getppid()}"
    elsewhere = serving / f".tmp-124-other-host-{dead_pid()}"
    for folder in (live, elsewhere):
        os.makedirs(folder / "variables")
    pusher.push(make_model(tmp_path / "a"), str(serving), {})
    assert live.is_dir() and elsewhere.is_dir()


# A push from another pipeline root (another process): it copies, then waits for a
# go-ahead file before its rename, so that a push from here happens meanwhile.
PUSH_AFTER_GO = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[4])
    from components import pusher
    rename = os.rename
    def rename_after_go(src, dst):
        print("copied", flush=True)
        while not os.path.exists(sys.argv[3]):
            time.sleep(0.05)
        rename(src, dst)
    pusher.os.rename = rename_after_go
    print(pusher.push(sys.argv[1], sys.argv[2], {})["version"], flush=True)
""")


def test_two_roots_pushing_at_once_keep_each_others_temporary_folder(tmp_path):
    serving = str(tmp_path / "serving")
    theirs = make_model(tmp_path / "theirs", b"their graph" * 1000)
    go = tmp_path / "go"
    other = subprocess.Popen([sys.executable, "-c", PUSH_AFTER_GO, theirs, serving, str(go),
                              REPO], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "copied"
        ours = pusher.push(make_model(tmp_path / "ours", b"our graph"), serving, {})
        assert ours["pushed"]
        go.write_text("go")
        # "copied" again when our push took their version number: they take the next one.
        lines = [line.strip() for line in other.stdout]
        their_version = int(lines[-1])
        assert other.wait(timeout=60) == 0
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert pusher.versions(serving) == sorted([ours["version"], their_version])
    assert their_version != ours["version"]
    assert pusher.model_digest(os.path.join(serving, str(their_version))) == \
        pusher.model_digest(theirs)
    assert not [n for n in os.listdir(serving) if n.startswith(pusher.TMP_PREFIX)]


PUSH_EACH = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from components import pusher
    for model in sys.argv[3:]:
        print(pusher.push(model, sys.argv[1], {})["version"], flush=True)
""")


def _tree(path):
    """{relative file name: size} under path."""
    return {os.path.relpath(os.path.join(root, name), path):
            os.path.getsize(os.path.join(root, name))
            for root, _, files in os.walk(path) for name in files}


def test_readers_polling_during_real_pushes_only_ever_see_whole_versions(tmp_path):
    """Pushes from another process while a reader lists the folder in a tight loop: at
    first sight each version already holds every file of its model at full size, and it
    loads and answers."""
    import tensorflow as tf
    models = []
    for seed in range(3):
        path = tmp_path / f"model{seed}"
        export_tiny_model(path, seed=seed)
        models.append(str(path))
    expected = [_tree(m) for m in models]
    serving = tmp_path / "serving"
    serving.mkdir()
    seen, partial, stop = {}, [], threading.Event()

    def reader():
        while not stop.is_set():
            for name in os.listdir(serving):
                if name.isdigit() and name not in seen:
                    tree = _tree(serving / name)
                    seen[name] = tree
                    if {k: v for k, v in tree.items() if k != pusher.PUSH_RECORD} not in expected:
                        partial.append((name, sorted(tree)))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        pushed = subprocess.run([sys.executable, "-c", PUSH_EACH, str(serving), REPO, *models],
                                capture_output=True, text=True, timeout=300)
    finally:
        stop.set()
        thread.join()
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    versions = pushed.stdout.split()
    assert sorted(seen) == sorted(versions) and len(versions) == len(models)
    assert not partial, partial
    for version in versions:
        loaded = tf.saved_model.load(str(serving / version))
        out = loaded.signatures["generate"](
            prompts=tf.constant(["ab"]), num_chars=tf.constant(3), temperature=tf.constant([0.0]),
            top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(1))
        assert len(out["text"].numpy()[0].decode()) == 5


def test_serving_dir_that_cannot_be_created_fails_cleanly(tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    with pytest.raises(pusher.PushError, match="cannot create it"):
        pusher.push(make_model(tmp_path / "a"), str(tmp_path / "a_file" / "serving"), {})


def test_a_failed_copy_leaves_no_partial_version(tmp_path, monkeypatch):
    serving = tmp_path / "serving"

    def full_disk(src, dst):
        os.makedirs(dst)
        with open(os.path.join(dst, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pusher.shutil, "copytree", full_disk)
    with pytest.raises(pusher.PushError, match="No space left on device"):
        pusher.push(make_model(tmp_path / "a"), str(serving), {})
    assert os.listdir(serving) == []
