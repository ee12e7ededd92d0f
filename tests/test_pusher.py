"""The Pusher's copy: atomic, numbered like TF Serving expects, never twice the same model."""
import os

import pytest

from components import pusher


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


def test_leftovers_of_a_killed_push_are_removed_and_never_look_like_versions(tmp_path):
    serving = tmp_path / "serving"
    os.makedirs(serving / ".tmp-123-999" / "variables")
    assert pusher.versions(str(serving)) == []
    pusher.push(make_model(tmp_path / "a"), str(serving), {})
    assert not any(n.startswith(".tmp-") for n in os.listdir(serving))


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
