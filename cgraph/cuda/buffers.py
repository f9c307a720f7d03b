"""StaticBuffers: the fixed arrays a graph reads and writes, sized once for the largest batch.

A graph replays against the addresses it was captured with, so inputs for every batch
size live in one set of arrays allocated for the largest size. A graph for n rows is
captured on the prefix views `view(name, n)`; before a replay, `fill` copies the real rows
in and pads the rest of the prefix (zeros by default; in debug mode floats are padded with
NaN so a kernel that reads padding shows up as NaN in real outputs).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from cgraph.cuda.device import require_device
from cgraph.cuda.interop import as_cupy
from cgraph.core.errors import ArgumentError, ArgumentTypeError, NotFoundError


def _debug_default() -> bool:
    return os.environ.get("CGRAPH_DEBUG", "") not in ("", "0")


class StaticBuffers:
    """Named device arrays allocated once; prefix views per size; padded copy-in.

    specs: name -> (shape, dtype); the first axis is the row (token/batch) axis.
    debug: pad float buffers with NaN instead of 0 (default: env CGRAPH_DEBUG=1).
    """

    __slots__ = ("_arrays", "_debug", "_cp")

    def __init__(self, specs: Mapping[str, tuple[tuple[int, ...], Any]], *, debug: bool | None = None) -> None:
        cp = require_device()
        self._cp = cp
        self._debug = _debug_default() if debug is None else bool(debug)
        if not isinstance(specs, Mapping) or not specs:
            raise ArgumentError(
                f"specs must be a non-empty mapping name -> (shape, dtype), got {specs!r}"
            )
        arrays = {}
        for name, spec in specs.items():
            try:
                shape, dtype = spec
                shape = tuple(int(d) for d in shape)
            except (TypeError, ValueError) as exc:
                raise ArgumentError(
                    f"buffer {name!r}: spec must be (shape, dtype), got {spec!r}"
                ) from exc
            if not shape or any(d < 1 for d in shape):
                raise ArgumentError(f"buffer {name!r}: shape must have positive sizes, got {shape}")
            arr = cp.empty(shape, dtype=dtype)
            self._pad(arr, None)
            arrays[name] = arr
        self._arrays = arrays

    @property
    def debug(self) -> bool:
        return self._debug

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._arrays)

    def capacity(self, name: str) -> int:
        """Rows the buffer holds (its first dimension)."""
        return self[name].shape[0]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    def __getitem__(self, name: str) -> Any:
        try:
            return self._arrays[name]
        except KeyError:
            raise NotFoundError(
                f"no static buffer named {name!r}; the buffers are {sorted(self._arrays)}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    def view(self, name: str, rows: int) -> Any:
        """The first `rows` rows of buffer `name` (same memory, contiguous)."""
        arr = self[name]
        if not 0 < rows <= arr.shape[0]:
            raise ArgumentError(
                f"buffer {name!r}: rows must be in 1..{arr.shape[0]}, got {rows}; "
                "allocate the buffers for the largest padded size"
            )
        return arr[:rows]

    def views(self, rows: int) -> dict[str, Any]:
        """`view(name, rows)` for every buffer."""
        return {name: self.view(name, rows) for name in self._arrays}

    def fill(self, name: str, src: Any, padded_rows: int | None = None, *, pad: Any = None) -> Any:
        """Copy src into the first len(src) rows and pad rows up to padded_rows; return the view.

        src: a NumPy or CuPy array (or a torch / JAX GPU array, read without a copy through
        DLPack) whose trailing dimensions and dtype match the buffer.
        pad: the padding value (default 0; NaN for float buffers in debug mode).
        """
        arr = self[name]
        src = as_cupy(src)
        cp = self._cp
        n = int(src.shape[0]) if getattr(src, "ndim", 0) else 0
        if getattr(src, "ndim", None) != arr.ndim or tuple(src.shape[1:]) != arr.shape[1:]:
            raise ArgumentError(
                f"buffer {name!r} holds rows of shape {arr.shape[1:]}, got an array of shape "
                f"{getattr(src, 'shape', None)}; reshape the input to (rows, *{arr.shape[1:]})"
            )
        if src.dtype != arr.dtype:
            raise ArgumentTypeError(
                f"buffer {name!r} has dtype {arr.dtype}, got {src.dtype}; convert with "
                f".astype({arr.dtype.name!r}) before filling"
            )
        padded = n if padded_rows is None else int(padded_rows)
        if not n <= padded <= arr.shape[0]:
            raise ArgumentError(
                f"buffer {name!r}: need rows ({n}) <= padded_rows ({padded}) <= capacity "
                f"({arr.shape[0]}); pad to a captured size no larger than the buffers"
            )
        if n:
            if isinstance(src, cp.ndarray):
                if src.device.id != arr.device.id:
                    raise ArgumentError(
                        f"buffer {name!r} lives on device {arr.device.id}, the input on "
                        f"device {src.device.id}; move it with cupy.asarray under that device"
                    )
                arr[:n] = src
            else:
                arr[:n].set(src, stream=cp.cuda.get_current_stream())
        if padded > n:
            self._pad(arr[n:padded], pad)
        return arr[:padded]

    def _pad(self, region: Any, pad: Any) -> None:
        if pad is None:
            pad = float("nan") if (self._debug and region.dtype.kind == "f") else 0
        region.fill(pad)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={tuple(a.shape)}:{a.dtype}" for k, a in self._arrays.items())
        return f"StaticBuffers({parts}{', debug' if self._debug else ''})"
