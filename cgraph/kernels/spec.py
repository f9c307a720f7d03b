"""Declarative argument specifications of the kernel launchers, and the one checker.

Each launcher declares its array arguments once (:class:`Arr`): the dtypes it accepts or
the argument whose dtype it must share, a symbolic shape, a memory layout and the address
alignment its kernels need. :meth:`Spec.bind` validates every argument against that
declaration, from shape, dtype, strides and address alone (nothing touches the device),
and returns the bound dimensions (:class:`Bound`); a bad argument raises ArgumentError or
ArgumentTypeError naming it, saying what was expected and how to fix the call. A launcher
then checks its scalars and geometry and calls :meth:`Bound.on_device` (host arrays are
rejected last, so every other mistake is reported the same way on a machine without a GPU).

Shape tokens: an int (that exact size), None (any size), a symbol ``"T"``, a scaled or
shifted symbol ``"2*I"`` / ``"S+1"`` (the first argument to use a symbol binds it; later
ones must agree), and a final ``"..."`` (one or more trailing dims of any size).

Layouts: ``contiguous`` (C-contiguous), ``rows`` (dims after the first contiguous, rows at
any positive stride that does not overlap them, e.g. a view of a fused qkv buffer).

Addresses: every array must start at a multiple of its element size (a view reinterpreting
a byte buffer might not), and at a multiple of ``align`` bytes where its kernels always
use vector accesses (for ``rows`` arrays the row stride too). Where a launcher has both a
vector and a scalar kernel it asks :meth:`Bound.aligned` and picks.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Mapping

import attrs
import numpy as np

from cgraph.core.errors import ArgumentError, ArgumentTypeError
from cgraph.cuda.interop import any_foreign, as_cupy

FLOATS = ("float16", "bfloat16", "float32")
HALVES = ("float16", "bfloat16")
INT32 = ("int32",)
CONTIGUOUS, ROWS = "contiguous", "rows"
#: kernel size arguments are int32.
MAX_DIM = 2**31 - 1

_TOKEN = re.compile(r"^(?:(\d+)\*)?([A-Za-z_]\w*)(?:\+(\d+))?$")


@attrs.frozen
class Arr:
    """One array argument of a launcher."""

    name: str
    shape: tuple[str | int | None, ...]
    dtypes: tuple[str, ...] = ()  # accepted dtype names
    like: str | None = None  # or: must have the dtype of this earlier argument
    layout: str = CONTIGUOUS
    align: int = 0  # bytes every kernel path needs (0: the element size only)
    why: str = ""  # why `align` is needed, for the error message
    optional: bool = False
    hint: str = ""  # how to build a right one, for shape errors

    def __attrs_post_init__(self) -> None:
        if bool(self.dtypes) == bool(self.like):
            raise ArgumentError(f"Arr {self.name!r}: give exactly one of dtypes= and like=")
        if self.layout not in (CONTIGUOUS, ROWS):
            raise ArgumentError(f"Arr {self.name!r}: layout must be {CONTIGUOUS!r} or {ROWS!r}, got {self.layout!r}")


@attrs.frozen
class Bound:
    """The result of a successful :meth:`Spec.bind`."""

    dims: dict[str, int]
    dtypes: dict[str, str]  # argument -> dtype name (absent optional arguments left out)
    itemsizes: dict[str, int]
    addresses: dict[str, int]
    row_strides: dict[str, int]  # argument -> elements between rows (``rows`` layout)
    host_arrays: dict[str, str] = attrs.field(factory=dict)  # argument -> type, for arrays not on the GPU

    def on_device(self) -> Bound:
        """Raise ArgumentTypeError naming the first argument that is not a GPU array (the
        launchers call it after their own checks, right before touching the device)."""
        if self.host_arrays:
            name, kind = next(iter(self.host_arrays.items()))
            raise ArgumentTypeError(f"{name} must be a CuPy array on the GPU, got {kind}; move it with "
                                    f"cupy.asarray(...) before launching")
        return self

    def aligned(self, nbytes: int, *names: str) -> bool:
        """True when each named (present) argument starts at a multiple of `nbytes` and, for
        a ``rows`` argument, its row stride is one too: what a vector path needs."""
        for n in names:
            if n not in self.addresses:
                continue
            if self.addresses[n] % nbytes or self.row_strides.get(n, 0) * self.itemsizes[n] % nbytes:
                return False
        return True


def dtype_name(x: Any) -> str:
    """The dtype name of an array (bfloat16 from ml_dtypes included)."""
    return str(getattr(x.dtype, "name", None) or np.dtype(x.dtype))


def address(x: Any) -> int:
    """Address of an array's first element: a CuPy array's device pointer, else the host's."""
    if hasattr(x, "data") and hasattr(x.data, "ptr"):
        return int(x.data.ptr)
    if hasattr(x, "__cuda_array_interface__"):
        return int(x.__cuda_array_interface__["data"][0])
    if hasattr(x, "__array_interface__"):
        return int(x.__array_interface__["data"][0])
    return 0


def c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Byte strides of a C-contiguous array of `shape`."""
    out, acc = [], itemsize
    for d in reversed(shape):
        out.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(out))


@attrs.frozen(init=False)
class Spec:
    """The array arguments of one launcher, in binding order."""

    launcher: str
    arrays: tuple[Arr, ...]
    at_least: Mapping[str, int]

    def __init__(self, launcher: str, *arrays: Arr, at_least: Mapping[str, int] | None = None):
        object.__setattr__(self, "launcher", launcher)
        object.__setattr__(self, "arrays", arrays)
        object.__setattr__(self, "at_least", dict(at_least or {}))

    def bind(self, known: Mapping[str, int] | None = None, **values: Any) -> Bound:
        """Check every argument; `known` pre-binds symbols from scalar arguments.

        The result depends only on each array's type, shape, strides, dtype and address
        (and `known`), so it is cached on those: the static buffers a step launches on
        are checked in full once, then looked up. GPU arrays of torch, JAX or another
        DLPack producer are checked as the CuPy views the launch will pass (no copy).
        """
        if any_foreign(values.values()):
            values = {name: as_cupy(v) for name, v in values.items()}
        try:
            key = (id(self), tuple(sorted(known.items())) if known else None,
                   *(_fingerprint(values.get(spec.name)) for spec in self.arrays))
        except (AttributeError, TypeError):  # not array-like: the full check reports it
            key = None
        bound = _BOUND.get(key) if key is not None else None
        if bound is None:
            bound = self._bind(known, values)
            if key is not None:
                if len(_BOUND) >= _BOUND_CAP:
                    _BOUND.clear()
                _BOUND[key] = bound
        return bound

    def _bind(self, known: Mapping[str, int] | None, values: Mapping[str, Any]) -> Bound:
        dims: dict[str, int] = dict(known or {})
        origin: dict[str, str] = {s: "the scalar arguments" for s in dims}
        dtypes: dict[str, str] = {}
        present: list[tuple[Arr, Any]] = []
        for spec in self.arrays:  # 1. structure: type, dtype, shape
            x = values[spec.name]
            if x is None:
                if spec.optional:
                    continue
                raise ArgumentTypeError(f"{self.launcher}: {spec.name} is required, got None")
            if not all(hasattr(x, a) for a in ("shape", "dtype", "strides")):
                raise ArgumentTypeError(f"{spec.name} must be an array (cupy.ndarray), got {type(x).__name__}")
            dtypes[spec.name] = _check_dtype(spec, x, dtypes)
            _bind_shape(spec, tuple(int(d) for d in x.shape), dims, origin)
            present.append((spec, x))
        for sym, low in self.at_least.items():
            if sym in dims and dims[sym] < low:
                raise ArgumentError(f"{self.launcher} needs {sym} >= {low}, got {sym}={dims[sym]} "
                                    f"(from {origin[sym]})")
        strides = {spec.name: _check_layout(spec, x) for spec, x in present}  # 2. strides
        addresses = {spec.name: _check_address(spec, x, strides[spec.name]) for spec, x in present}  # 3.
        rows = {spec.name: strides[spec.name] for spec, _ in present if spec.layout == ROWS}
        host = {spec.name: f"{type(x).__module__}.{type(x).__name__}" for spec, x in present
                if not hasattr(x, "__cuda_array_interface__")}
        return Bound(dims, dtypes, {spec.name: int(x.dtype.itemsize) for spec, x in present}, addresses, rows, host)


_BOUND: dict[tuple, Bound] = {}
_BOUND_CAP = 4096  # bounded: cleared when full


def _fingerprint(x: Any) -> tuple | None:
    # what a check reads of an array; raises AttributeError for something that is not one
    if x is None:
        return None
    return (type(x), x.shape, x.strides, x.dtype, address(x))


def _check_dtype(spec: Arr, x: Any, bound: dict[str, str]) -> str:
    dt = dtype_name(x)
    if spec.like is not None:
        want = bound.get(spec.like)
        if want is not None and dt != want:
            raise ArgumentTypeError(f"{spec.name} has dtype {dt} but must match {spec.like}'s dtype {want} "
                                    f"(convert with .astype(...))")
    elif dt not in spec.dtypes:
        raise ArgumentTypeError(f"{spec.name} has dtype {dt}; expected one of {', '.join(spec.dtypes)} "
                                f"(convert with .astype(...))")
    return dt


@functools.lru_cache(maxsize=None)
def _parse(token: str | int | None) -> tuple[int, str, int] | None:
    if token is None or isinstance(token, int):
        return None
    m = _TOKEN.match(token)
    if m is None:
        raise ArgumentError(f"bad shape token {token!r} in a launcher specification")
    return int(m.group(1) or 1), m.group(2), int(m.group(3) or 0)


def _symbolic(tokens: tuple) -> str:
    return "[" + ", ".join("*" if t is None else str(t) for t in tokens) + "]"


def _concrete(tokens: tuple, dims: dict[str, int]) -> str:
    def one(t: Any) -> str:
        if t is None:
            return "*"
        p = _parse(t) if t != "..." else None
        if p is None or p[1] not in dims:
            return str(t)
        return str(p[0] * dims[p[1]] + p[2])
    return "[" + ", ".join(one(t) for t in tokens) + "]"


def _bind_shape(spec: Arr, got: tuple[int, ...], dims: dict[str, int], origin: dict[str, str]) -> None:
    tokens = spec.shape
    rest = bool(tokens) and tokens[-1] == "..."
    fixed = tokens[:-1] if rest else tokens
    hint = f" ({spec.hint})" if spec.hint else ""
    if (len(got) < len(fixed) + 1) if rest else (len(got) != len(fixed)):
        want = f"{len(fixed) + 1} or more dims" if rest else f"{len(fixed)} dims"
        raise ArgumentError(f"{spec.name} has shape {list(got)}; expected {want}, "
                            f"{_concrete(tokens, dims)}{hint}")
    if any(size > MAX_DIM for size in got):
        raise ArgumentError(f"{spec.name} has shape {list(got)}; the kernels take sizes below 2**31")
    for i, (token, size) in enumerate(zip(fixed, got)):
        p = _parse(token)
        if p is None:
            if token is not None and size != token:
                raise ArgumentError(f"{spec.name} has shape {list(got)}; expected {_concrete(tokens, dims)}{hint}")
            continue
        k, sym, c = p
        if sym in dims:
            if size != k * dims[sym] + c:
                raise ArgumentError(
                    f"{spec.name} has shape {list(got)}; expected {_concrete(tokens, dims)} "
                    f"(= {_symbolic(tokens)}; {_origins(tokens, origin)}){hint}")
        elif size < c or (size - c) % k:
            raise ArgumentError(f"{spec.name} has shape {list(got)}; expected {_symbolic(tokens)}: "
                                f"dim {i} is {size}, not {token} for a whole {sym}{hint}")
        else:
            dims[sym], origin[sym] = (size - c) // k, spec.name


def _origins(tokens: tuple, origin: dict[str, str]) -> str:
    by: dict[str, list[str]] = {}
    for t in tokens:
        p = _parse(t) if t not in (None, "...") else None
        if p is not None and p[1] in origin:
            by.setdefault(origin[p[1]], []).append(p[1])
    return ", ".join(f"{' and '.join(dict.fromkeys(syms))} from {src}" for src, syms in by.items())


def _check_layout(spec: Arr, x: Any) -> int:
    """Validate strides; return the row stride in elements (rows) or 0."""
    shape, strides = tuple(int(d) for d in x.shape), tuple(int(s) for s in x.strides)
    item = int(x.dtype.itemsize)
    if 0 in shape:
        return 0
    if spec.layout == CONTIGUOUS:
        want = c_strides(shape, item)
        if any(d > 1 and s != w for d, s, w in zip(shape, strides, want)):
            raise ArgumentError(f"{spec.name} must be C-contiguous (strides {strides}, expected {want}); "
                                f"pass cupy.ascontiguousarray({spec.name}) outside the captured region")
        return 0
    inner = math.prod(shape[1:])
    want = c_strides(shape[1:], item)
    if any(d > 1 and s != w for d, s, w in zip(shape[1:], strides[1:], want)):
        raise ArgumentError(f"{spec.name} must be contiguous within each row (strides {strides}); rows may "
                            f"be strided (e.g. a view of a fused qkv buffer), inner dims may not")
    if shape[0] == 1:
        return inner
    if strides[0] % item or strides[0] < inner * item:
        raise ArgumentError(f"{spec.name} row stride is {strides[0]} bytes; it must be a multiple of its "
                            f"itemsize {item} and at least a row ({inner * item} bytes: rows may not overlap)")
    return strides[0] // item


def _check_address(spec: Arr, x: Any, row_stride: int) -> int:
    addr = address(x)
    if int(x.size) == 0:
        return addr
    item = int(x.dtype.itemsize)
    if addr % item:
        raise ArgumentError(f"{spec.name} starts at address {addr:#x}, not a multiple of its element size "
                            f"({item} bytes); a view reinterpreting a byte buffer must start on an element "
                            f"boundary")
    if spec.align:
        # one row: its stride is never used
        stride_bytes = row_stride * item if spec.layout == ROWS and x.shape[0] > 1 else 0
        if addr % spec.align:
            raise ArgumentError(
                f"{spec.name} starts at address {addr:#x}, {addr % spec.align} bytes past a {spec.align}-byte "
                f"boundary; {spec.why or 'its kernels need it'}. Allocate it with cupy.empty or slice its "
                f"buffer at a multiple of {spec.align // item} elements")
        if stride_bytes % spec.align:
            raise ArgumentError(f"{spec.name} rows are {row_stride} elements apart; the stride must be a "
                                f"multiple of {spec.align // item} elements ({spec.align} bytes): "
                                f"{spec.why or 'its kernels need it'}")
    return addr


def require_int(name: str, value: Any, minimum: int) -> int:
    """A host int >= minimum (numpy integers too), else ArgumentError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ArgumentError(f"{name} must be a host int >= {minimum}, got {value!r}")
    return int(value)


def require_float(name: str, value: Any, minimum: float | None = None) -> float:
    """A host float (or int), at least `minimum` when given, else ArgumentError/ArgumentTypeError."""
    if isinstance(value, bool) or not isinstance(value, (float, int, np.floating, np.integer)):
        raise ArgumentTypeError(f"{name} must be a float, got {type(value).__name__}")
    if minimum is not None and not value >= minimum:
        raise ArgumentError(f"{name} must be a float >= {minimum}, got {value!r}")
    return float(value)
