"""A tiny reader and writer for the safetensors format, with NumPy only.

The format: 8 bytes (little-endian u64) giving the header length N, then N bytes of
JSON mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
(offsets relative to the byte buffer after the header; an optional "__metadata__"
entry maps strings to strings), then the raw little-endian tensor bytes.

BF16 tensors are returned as float32 (exact: bfloat16 is the top half of a float32),
since NumPy has no bfloat16; the caller casts to the model's dtype.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Mapping

import numpy as np

from cgraph.core.errors import ArgumentError, ArgumentTypeError

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # a larger header means a corrupt or foreign file


class SafetensorsError(ArgumentError):
    """The file is not a valid safetensors file (the message says what is wrong)."""


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    # bfloat16 bits are the high 16 bits of the float32 with the same value
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file into NumPy arrays (BF16 -> float32)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8:
        raise SafetensorsError(f"{path}: {len(data)} bytes is too short for a safetensors file "
                               "(expected an 8-byte header length first)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise SafetensorsError(f"{path}: header length {n} does not fit the file of {len(data)} "
                               "bytes; the file is truncated or not safetensors")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"{path}: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header must be a JSON object, got {type(header).__name__}")
    body = memoryview(data)[8 + n:]
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise SafetensorsError(f"{path}: entry {name!r} lacks dtype/shape/data_offsets") from exc
        count = int(np.prod(shape, dtype=np.int64))
        if dtype_name == "BF16":
            itemsize, dt = 2, np.dtype("<u2")
        elif dtype_name in _DTYPES:
            dt = _DTYPES[dtype_name]
            itemsize = dt.itemsize
        else:
            raise SafetensorsError(f"{path}: tensor {name!r} has dtype {dtype_name!r}; supported: "
                                   f"{sorted([*_DTYPES, 'BF16'])}")
        if not (0 <= begin <= end <= len(body)) or end - begin != count * itemsize:
            raise SafetensorsError(f"{path}: tensor {name!r} offsets [{begin}, {end}) do not match "
                                   f"shape {shape} of {dtype_name} in a body of {len(body)} bytes")
        arr = np.frombuffer(body[begin:end], dtype=dt).reshape(shape)
        out[name] = _bf16_to_f32(arr) if dtype_name == "BF16" else arr.copy()
    return out


def write_safetensors(path: str | Path, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write NumPy arrays as a safetensors file (dtypes F64/F32/F16/I64/I32/I16/I8/U8/BOOL)."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        key = _NAMES.get(np.dtype(dt))
        if key is None:
            raise ArgumentTypeError(f"tensor {name!r} has dtype {arr.dtype}; safetensors writing supports "
                            f"{sorted(str(d) for d in _DTYPES.values())}: cast it first")
        raw = arr.astype(dt.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": key, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the body starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)
