"""Cancelling one TensorFlow function call without touching concurrent ones: the one
patch of a private TensorFlow API in the project, kept here and tested
(tests/test_serving_cancellation.py).

Why a patch: TensorFlow 2.16 has no public way to cancel a running tf.function. Its
eager runtime takes the cancellation manager for a call from one process-wide variable
(tensorflow/python/eager/cancellation.py `context()`, read by Context.call_function),
so using its own CancellationManagerContext from several request threads would let one
request's timeout cancel every other request running then, and a version loading
meanwhile. Replacing `cancellation.context` with a per-thread lookup keeps its meaning
for code that uses TensorFlow's context manager and gives each request thread its own.
If a TensorFlow upgrade renames `cancellation.context`, the import below fails loudly.
"""
import threading

from tensorflow.python.eager import cancellation

from serving.deadlines import CancelToken

_per_thread = threading.local()
_process_wide_context = cancellation.context


def _cancellation_context():
    return getattr(_per_thread, "manager", None) or _process_wide_context()


cancellation.context = _cancellation_context


def call(function, kwargs, cancel: CancelToken):
    """function(**kwargs) in this thread, stopped between two of its ops once `cancel`
    is cancelled (the call then raises tf.errors.CancelledError)."""
    manager = cancellation.CancellationManager()
    _per_thread.manager = manager
    cancel.on_cancel(manager.start_cancel)
    try:
        return function(**kwargs)
    finally:
        _per_thread.manager = None
