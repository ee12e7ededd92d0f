"""`generate` under iteration-level scheduling (serving/stepping.py): requests join the
running batch at the next round and leave when done; each gets exactly the text that the
in-graph `generate` gives it alone."""
import threading

import numpy as np
import pytest

from serving import settings
from serving.deadlines import CancelToken
from serving.errors import ServingError
from serving.servable import Servable
from test_serving_batching import _wait_until, concurrently

BATCHING = settings.BatchingParameters(max_batch_size=16, batch_timeout_micros=0,
                                       num_batch_threads=1, max_enqueued_batches=4)
LIMITS = settings.Limits(max_num_chars=50_000, max_batch_chars=1_000_000)


@pytest.fixture(scope="module")
def servables(tiny_model_dir):
    """The same model twice: with batching (stepped) and without (the in-graph loop)."""
    stepped, alone = Servable(tiny_model_dir, 1, batching=BATCHING), Servable(tiny_model_dir, 1)
    assert stepped.stepper is not None and alone.stepper is None
    yield stepped, alone
    stepped.close()


def _inputs(prompts, num_chars, temperature=0.9, seed=None, top_k=0, top_p=1.0):
    rows = len(prompts)
    return {"prompts": np.array([p.encode() for p in prompts], dtype=object),
            "num_chars": np.broadcast_to(np.asarray(num_chars, np.int32), [rows]).copy(),
            "temperature": np.full([rows], temperature, np.float32),
            "top_k": np.full([rows], top_k, np.int32), "top_p": np.full([rows], top_p, np.float32),
            "seed": np.asarray(seed if seed is not None else range(1, rows + 1), np.int32)}


def _text(servable, inputs, cancel=None):
    return [t.decode() for t in servable.predict("generate", inputs, limits=LIMITS,
                                                 cancel=cancel)[1]["text"]]


def test_seeded_text_is_the_same_alone_and_amid_mixed_traffic(servables):
    stepped, alone = servables
    requests = [_inputs([["ab", "hé", "c:", "dd"][i % 4]], [12, 300, 40, 3, 7][i % 5],
                        0.5 + 0.1 * i, seed=[100 + i], top_k=i % 3, top_p=1.0 - 0.05 * (i % 2))
                for i in range(12)]
    # A request of several rows with their own lengths, one of them zero.
    requests.append(_inputs(["a", "bb", "c"], [25, 0, 61], seed=[7, 8, 9]))
    expected = [_text(alone, r) for r in requests]
    rounds = stepped.stepper.rounds
    got = concurrently([lambda r=r: _text(stepped, r) for r in requests])
    assert got == expected
    assert got[-1][1] == "bb"  # num_chars 0: the prompt alone
    assert stepped.stepper.rounds > rounds
    assert stepped.stepper.largest_batch > 1, "no two requests shared a step"


def test_a_short_request_finishes_before_a_long_one_that_started_first(servables):
    stepped, alone = servables
    long_request, short = _inputs(["ab"], 20_000, seed=[3]), _inputs(["c:"], 20, seed=[4])
    finished = []
    long_thread = threading.Thread(target=lambda: finished.append(
        ("long", _text(stepped, long_request))))
    joined = stepped.stepper.joined_running
    long_thread.start()
    _wait_until(lambda: stepped.stepper.pending()[1] == 1)  # the long row is running
    finished.append(("short", _text(stepped, short)))
    assert [name for name, _ in finished] == ["short"]  # the long one is still running
    long_thread.join(300)
    assert [name for name, _ in finished] == ["short", "long"]
    assert stepped.stepper.joined_running == joined + 1
    assert finished[0][1] == _text(alone, short)
    assert len(finished[1][1][0]) == 2 + 20_000


def test_a_cancelled_request_leaves_and_the_others_go_on(servables):
    stepped, alone = servables
    victim, survivor = _inputs(["ab"], 20_000, seed=[5]), _inputs(["hé"], 3_000, seed=[6])
    cancel, errors, texts = CancelToken(), [], []

    def run_victim():
        try:
            _text(stepped, victim, cancel)
        except ServingError as err:
            errors.append(err.code)
    threads = [threading.Thread(target=run_victim),
               threading.Thread(target=lambda: texts.append(_text(stepped, survivor)))]
    for thread in threads:
        thread.start()
    _wait_until(lambda: stepped.stepper.pending()[1] == 2)
    cancel.cancel("DEADLINE_EXCEEDED", "this request's own timeout")
    threads[0].join(300)
    assert errors == ["DEADLINE_EXCEEDED"]
    threads[1].join(300)
    assert texts == [_text(alone, survivor)]
    _wait_until(lambda: stepped.stepper.pending() == (0, 0))  # the victim's row left


def test_a_prompt_the_graph_refuses_fails_only_its_request(servables):
    """Prompts over the graph's length bound pass the server's checks (they fit the
    request limits) and fail in the prompt-reading call: that call is run again one
    request at a time."""
    from models.export import MAX_PROMPT_CHARS
    stepped, alone = servables
    good = [_inputs(["ab"], 30, seed=[10 + i]) for i in range(6)]
    bad = _inputs(["a" * (MAX_PROMPT_CHARS + 1)], 1, seed=[1])

    def call(inputs):
        try:
            return _text(stepped, inputs)
        except ServingError as err:
            return err
    got = concurrently([lambda r=r: call(r) for r in good + [bad]])
    assert got[:6] == [_text(alone, r) for r in good]
    assert got[6].code == "INVALID_ARGUMENT" and "longer than" in got[6].message


def test_close_answers_waiting_and_running_requests_unavailable(tiny_model_dir):
    servable = Servable(tiny_model_dir, 1, batching=BATCHING)
    errors = []

    def call():
        try:
            _text(servable, _inputs(["ab"], 40_000))
        except ServingError as err:
            errors.append(err.code)
    thread = threading.Thread(target=call)
    thread.start()
    _wait_until(lambda: servable.stepper.pending()[1] == 1)
    servable.close()
    thread.join(300)
    assert errors == ["UNAVAILABLE"]
    with pytest.raises(ServingError) as caught:
        _text(servable, _inputs(["ab"], 5))
    assert caught.value.code == "UNAVAILABLE"


def test_more_rows_than_max_batch_size_are_refused(servables):
    stepped, _ = servables
    with pytest.raises(ServingError) as caught:
        _text(stepped, _inputs(["a"] * 17, 5))
    assert caught.value.code == "INVALID_ARGUMENT" and "max_batch_size" in caught.value.message


def test_rows_beyond_the_queue_are_refused_unavailable_at_once(tiny_model_dir):
    """One row runs (max_batch_size 1), one waits (max_enqueued_batches 1): the next
    request is refused, not queued; the two others finish."""
    servable = Servable(tiny_model_dir, 1, batching=settings.BatchingParameters(
        max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=1))
    texts = []
    threads = [threading.Thread(target=lambda: texts.append(
        _text(servable, _inputs(["ab"], 20_000)))) for _ in range(2)]
    try:
        threads[0].start()
        _wait_until(lambda: servable.stepper.pending() == (0, 1))
        threads[1].start()
        _wait_until(lambda: servable.stepper.pending() == (1, 1))
        with pytest.raises(ServingError) as caught:
            _text(servable, _inputs(["c"], 5))
        assert caught.value.code == "UNAVAILABLE" and "max_enqueued_batches" in \
            caught.value.message
        for thread in threads:
            thread.join(300)
    finally:
        servable.close()
    assert [len(t[0]) for t in texts] == [2 + 20_000] * 2
