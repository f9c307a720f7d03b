"""Graph-safe random numbers: a Philox4x32-10 generator whose state lives on the device.

A CUDA graph replays the kernel arguments it captured, so a generator that passes its seed
and offset as launch arguments replays the same numbers forever. `Generator` keeps them in
device memory instead (four uint32 words: key lo, key hi, offset lo, offset hi, the offset
counting 128-bit counter blocks): every draw reads the offset on the device and is followed
by a one-thread launch that moves it past the blocks the draw used. A captured draw
therefore gives fresh numbers on every replay, and the numbers are a function of
(seed, offset) alone: `manual_seed(seed)` (offset 0) replays a run exactly. Draws are
ordered by the stream (the advance of one draw runs after it and before the next).

Memory contract: the state is a plain CuPy allocation owned by the Generator, made outside
any capture (creating a Generator inside one raises StateError). A graph that captures a
draw keeps the state alive (it is registered with the capture), so the state outlives the
graphs that use it; `manual_seed` and `offset` are host operations and refuse to run
inside a capture. A capture's warm-up runs its draws eagerly (they advance the offset):
call manual_seed after capturing to start the replays at offset 0.

The NumPy reference of every draw is cgraph.kernels.random_reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cgraph.core.checks import check_int
from cgraph.core.errors import ArgumentTypeError, StateError
from cgraph.core.sampling import MAX_SEED, SamplingParams
from cgraph.cuda import state as _state
from cgraph.cuda.device import require_device
from cgraph.kernels.launch import F32, I32, launch
from cgraph.kernels.sampling import check_vocab, pick_variant
from cgraph.kernels.spec import FLOATS, INT32, Arr, Spec

_THREADS = 256
_BITS = Spec("random_bits", Arr("out", (None,), ("uint32",)))
_UNIFORM = Spec("uniform", Arr("out", (None,), ("float32",)))
_SAMPLE = Spec("Generator.sample", Arr("logits", ("T", "V"), FLOATS), Arr("out", ("T",), INT32), at_least={"V": 1})


def _host_only(what: str) -> None:
    if _state.active() is not None:
        raise StateError(f"Generator.{what} is a host operation and cannot run inside a capture; call it "
                         "before capturing or between replays")


class Generator:
    """A counter-based random generator with its seed and offset in device memory (see module doc)."""

    def __init__(self, seed: int = 0) -> None:
        cp = require_device()
        _host_only("__init__")
        self._cp = cp
        self.state = cp.zeros(4, dtype=cp.uint32)
        self.manual_seed(seed)

    # --- host operations ------------------------------------------------------------------
    def manual_seed(self, seed: int, offset: int = 0) -> "Generator":
        """Restart the stream: key = seed (64-bit), offset in counter blocks. Synchronous."""
        _host_only("manual_seed")
        seed = check_int(seed, "seed", 0, MAX_SEED, hint="a non-negative 64-bit integer")
        offset = check_int(offset, "offset", 0, MAX_SEED, hint="counter blocks (4 values each) already used")
        self.seed = seed
        words = np.array([seed & 0xFFFFFFFF, seed >> 32, offset & 0xFFFFFFFF, offset >> 32], np.uint32)
        self.state.set(words)
        self._cp.cuda.get_current_stream().synchronize()
        return self

    @property
    def offset(self) -> int:
        """The device offset now (counter blocks used so far); waits for the stream."""
        _host_only("offset")
        w = self.state.get().astype(np.uint64)
        return int(w[2]) | (int(w[3]) << 32)

    # --- draws (capturable) -----------------------------------------------------------------
    def _use(self) -> None:
        capture = _state.active()
        if capture is not None and not any(x is self.state for x in capture.keepalive):
            capture.keepalive.append(self.state)  # the graph keeps the state alive

    def _advance(self, blocks: int, stream: Any) -> None:
        launch("random", "philox_advance", (1,), 32, (self.state, np.uint64(blocks)), stream)

    def _out(self, shape: Any, out: Any, dtype: Any, spec: Spec) -> Any:
        cp = self._cp
        if out is None:
            if shape is None:
                raise ArgumentTypeError("pass shape= or out=: the array to fill")
            out = cp.empty(shape, dtype=dtype)
        if not hasattr(out, "reshape") or not getattr(out, "flags", None) or not out.flags.c_contiguous:
            raise ArgumentTypeError(f"out must be a C-contiguous CuPy array, got {type(out).__name__}")
        spec.bind(out=out.reshape(-1)).on_device()
        return out

    def _fill(self, kernel: str, out: Any, stream: Any) -> Any:
        n = int(out.size)
        if n == 0:
            return out
        if n > 2**31 - 1:
            raise StateError(f"a draw of {n} values exceeds 2^31 - 1; draw in parts")
        self._use()
        blocks = -(-n // 4)
        launch("random", kernel, (-(-blocks // _THREADS),), _THREADS, (self.state, out.reshape(-1), I32(n)), stream)
        self._advance(blocks, stream)
        return out

    def random_bits(self, shape: Any = None, *, out: Any = None, stream: Any = None) -> Any:
        """Fill a uint32 array (new of `shape`, or `out`) with the next words of the stream."""
        return self._fill("philox_bits", self._out(shape, out, np.uint32, _BITS), stream)

    def uniform(self, shape: Any = None, *, out: Any = None, stream: Any = None) -> Any:
        """Fill a float32 array (new of `shape`, or `out`) with uniforms in [0, 1) (24 random
        bits each), then advance the offset by ceil(size / 4) blocks."""
        return self._fill("philox_uniform", self._out(shape, out, np.float32, _UNIFORM), stream)

    def sample(self, logits: Any, *, out: Any, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               stream: Any = None) -> Any:
        """out[r] = a token sampled from row r of logits [T, V] (int32 out [T]), every row
        with the same parameters (validated as cgraph.core.sampling.SamplingParams; a
        captured call keeps them). Row r draws counter block (offset + r); the offset then
        advances by T. The rules are the per-row sampler's (cgraph.kernels.sampling)."""
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
        b = _SAMPLE.bind(logits=logits, out=out)
        check_vocab(b.dims["V"], "Generator.sample")
        b.on_device()
        t, vocab = b.dims["T"], b.dims["V"]
        if t == 0:
            return out
        self._use()
        variant, threads = pick_variant(b, b.dtypes["logits"], vocab)
        launch("sampling", f"sample_gen_{variant}", (t,), threads,
               (logits, self.state, out, I32(vocab), F32(params.temperature), F32(params.top_p), I32(params.top_k)),
               stream)
        self._advance(t, stream)
        return out
