"""CaptureSession: the one bracket around CUDA stream capture.

Every capture in cgraph (a plain graph, the segments of a breakable capture, the template
of a rebind) runs inside a session, and stream capture begins only here. A session owns,
for its duration:

1. the thread's capture state (cgraph.cuda.state): a second session on the same thread
   raises NestedCaptureError;
2. stream fencing: the capture stream first waits for the caller's current stream, and
   on exit the caller's stream waits for the capture stream;
3. the capture stream as CuPy's current stream and the pool as its allocator, for the
   warm-up runs as well as the capture, so warm-up grows exactly the pool the graph
   will use;
4. begin/end: :meth:`begin` starts relaxed-mode stream capture, :meth:`end` ends it and
   instantiates the graph, :meth:`end_template` ends it without instantiating;
5. clean-up: on any exit a capture still open is ended and its graph discarded, the
   allocator and stream are restored and the thread state is cleared, so after an
   exception no stream is left capturing; a NotImplementedError raised while capturing
   (CuPy's refusal of cuBLAS and its other host-API libraries) leaves as CaptureError
   naming cgraph.matmul.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from cgraph.core.errors import ArgumentError, ArgumentTypeError, CaptureError, StateError
from cgraph.cuda import callbacks
from cgraph.cuda import state as _state
from cgraph.cuda.device import require_device
from cgraph.cuda.pool import GraphPool


def check_capture_stream(stream: Any) -> None:
    """Refuse the legacy default stream, on which CUDA cannot capture."""
    if getattr(stream, "ptr", None) == 0:
        raise ArgumentError(
            "cannot capture on the legacy default stream (stream.ptr == 0); pass "
            "cupy.cuda.Stream(non_blocking=True) or leave stream=None to use the pool's stream"
        )


def is_capturing(stream: Any) -> bool:
    """True while ``stream`` is capturing (an invalidated capture counts as capturing)."""
    runtime = require_device().cuda.runtime
    try:
        return runtime.streamIsCapturing(stream.ptr) != runtime.streamCaptureStatusNone
    except Exception:  # noqa: BLE001 - CuPy raises for an invalidated capture, still open
        return True


class CaptureSession:
    """Context manager around one or more stream captures into one pool (module docstring).

    kind: "full" or "breakable" (what eager breaks do inside, see cgraph.cuda.state).
    owner: the object eager breaks hand themselves to (a BreakableCapture).
    """

    def __init__(self, name: str, pool: GraphPool, *, stream: Any = None, kind: str = "full",
                 owner: Any = None) -> None:
        if not isinstance(pool, GraphPool):
            raise ArgumentTypeError(f"pool must be a GraphPool, got {type(pool).__name__}")
        pool.ensure_open()
        self._stream = pool.stream if stream is None else stream
        check_capture_stream(self._stream)
        self._cp = require_device()
        self.name = name
        self.pool = pool
        self.state = _state.ActiveCapture(kind=kind, name=name, owner=owner)
        self._caller: Any = None
        self._exits: list[Any] = []
        self._capturing = False
        self._started = 0.0
        self.capture_seconds = 0.0  # wall time from the first begin() to the last end

    @property
    def stream(self) -> Any:
        return self._stream

    @property
    def capturing(self) -> bool:
        """True between begin() and end()."""
        return self._capturing

    @property
    def keepalive(self) -> tuple:
        """What host callbacks captured so far need alive for as long as the graph can run."""
        return tuple(self.state.keepalive)

    def __enter__(self) -> "CaptureSession":
        _state.enter(self.state)
        try:
            callbacks.check_callbacks()
            self._caller = self._cp.cuda.get_current_stream()
            self._stream.wait_event(self._caller.record())
            for ctx in (self._stream, self.pool.allocating()):
                ctx.__enter__()
                self._exits.append(ctx)
        except BaseException:
            self._unwind()
            raise
        return self

    def warm_up(self, fn: Callable[..., Any], args: tuple, kwargs: dict, times: int) -> None:
        """Run fn(*args, **kwargs) eagerly ``times`` times on the capture stream and pool."""
        for _ in range(times):
            fn(*args, **kwargs)

    def begin(self) -> None:
        """Start (relaxed-mode) stream capture on the session's stream."""
        if self._capturing:
            raise StateError(f"capture session {self.name!r} is already capturing; end() it first")
        if not self.state.recording:
            self._started = time.perf_counter()
        self._stream.begin_capture()
        self._capturing = True
        self.state.recording = True

    def end(self) -> Any:
        """End the capture and return the instantiated cupy.cuda.graph.Graph."""
        self._require_capturing()
        self._capturing = False
        graph = self._stream.end_capture()
        self.capture_seconds = time.perf_counter() - self._started
        return graph

    def end_template(self) -> int:
        """End the capture and return the raw cudaGraph_t, NOT instantiated.

        The caller owns it and must destroy it (cupy.cuda.runtime.graphDestroy).
        """
        self._require_capturing()
        self._capturing = False
        template = self._cp.cuda.runtime.streamEndCapture(self._stream.ptr)
        self.capture_seconds = time.perf_counter() - self._started
        return template

    def _require_capturing(self) -> None:
        if not self._capturing:
            raise StateError(f"capture session {self.name!r} is not capturing; call begin() first")

    def abort(self) -> None:
        """End a capture that failed, if still open; whatever it recorded is discarded."""
        if not (self._capturing or is_capturing(self._stream)):
            return
        self._capturing = False
        runtime = self._cp.cuda.runtime
        try:
            runtime.graphDestroy(runtime.streamEndCapture(self._stream.ptr))
        except Exception:  # noqa: BLE001 - an invalidated capture raises here, and still ends
            pass

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        refused = isinstance(exc, NotImplementedError) and self._capturing
        self.abort()
        self._unwind()
        if refused:
            # CuPy raises NotImplementedError for cuBLAS (matmul, @, dot, tensordot) and its
            # other host-API libraries while a stream captures: name the capturable calls.
            raise CaptureError(
                f"capture {self.name!r}: CuPy refused a call inside the stream capture "
                f"(NotImplementedError: {exc}). CuPy cannot capture cuBLAS: replace cupy.matmul, "
                f"`@`, dot and tensordot by cgraph.matmul(a, b) (cuBLASLt, capturable), or "
                f"cgraph.kernels.gemm for [N, K] weights; cuRAND, cuSOLVER and cuSPARSE calls must "
                f"run outside the capture"
            ) from exc
        return False

    def _unwind(self) -> None:
        while self._exits:
            self._exits.pop().__exit__(None, None, None)
        if self._caller is not None:
            self._caller.wait_event(self._stream.record())
            self._caller = None
        _state.leave(self.state)
