"""Attention launchers: paged (decode and chunked prefill over a paged KV cache) and
contiguous varlen (decoder prefill, vision encoder).

Kernel paths (kernels/attention.cu) and what they assume of every pointer:

- prefill (``flash_<dt>_d<D>``, D = 64 or 128): q, k, v copied in 16-byte pieces
  (cp.async), out stored 4 bytes at a time and padding rows 16 bytes at a time;
- decode (``flash_decode_*``, D = 64 or 128): q and the caches copied in 16-byte pieces,
  out stored one element at a time;
- CUDA-core kernel (``attention_*``, every other D <= 256): q, k, v loaded in 16-byte
  pieces, out stored one element at a time;
- block_tables, seq_lens, query_start_loc, num_seqs, cu_seqlens: int32 loads.

So q, k, v (base and row stride) must be 16-byte aligned on every path, and out on the
prefill path; the launchers require 16 bytes for out always (one contract whichever path
a call takes) and raise ArgumentError naming any argument that misses it. D must be a
multiple of 8 (whole 16-byte pieces per head).

Device-side metadata (lengths, block ids) is read on the device, so one captured graph
serves any lengths; its values must describe rows and blocks that exist.
"""

from __future__ import annotations

from typing import Any

from cgraph.core.errors import ArgumentError, NotFoundError
from cgraph.kernels.launch import F32, I32, I64, device_facts, launch, tag
from cgraph.kernels.loader import get_kernel
from cgraph.kernels.spec import HALVES, INT32, ROWS, Arr, Bound, Spec, require_float, require_int

_WHY = "the attention kernels copy q, k and v, and store out, in 16-byte pieces"
_PAGED = Spec("paged_attention",
              Arr("q", ("T", "Hq", "D"), HALVES, layout=ROWS, align=16, why=_WHY),
              Arr("k_cache", ("NB", "BS", "Hkv", "D"), like="q", align=16, why=_WHY),
              Arr("v_cache", ("NB", "BS", "Hkv", "D"), like="q", align=16, why=_WHY),
              Arr("out", ("T", "Hq", "D"), like="q", align=16, why=_WHY),
              Arr("block_tables", ("S", "MB"), INT32),
              Arr("seq_lens", ("S",), INT32),
              Arr("query_start_loc", ("S+1",), INT32),
              Arr("num_seqs", (1,), INT32),
              at_least={"Hq": 1, "Hkv": 1, "D": 8, "BS": 1})
_VARLEN = Spec("varlen_attention",
               Arr("q", ("T", "Hq", "D"), HALVES, layout=ROWS, align=16, why=_WHY),
               Arr("k", ("T", "Hkv", "D"), like="q", layout=ROWS, align=16, why=_WHY),
               Arr("v", ("T", "Hkv", "D"), like="q", layout=ROWS, align=16, why=_WHY),
               Arr("out", ("T", "Hq", "D"), like="q", align=16, why=_WHY),
               Arr("cu_seqlens", ("N+1",), INT32),
               at_least={"Hq": 1, "Hkv": 1, "D": 8, "N": 1})

_LOG2E = 1.4426950408889634
#: head sizes of the tensor-core kernels; other head sizes use the CUDA-core kernel.
FLASH_HEAD_SIZES = (64, 128)
_FLASH_ROWS = 64  # query rows per CTA of the prefill kernel
_FLASH_STAGES, _DECODE_STAGES = 2, 3  # K/V tiles of 64 keys in flight (see kernels/attention.cu)
_MAX_GRID_Z = 65535  # the decode kernel puts rows (sequences) on grid z
#: decode kernel variants: (KV heads per CTA, warps per head); keys per tile = 16 * warps per head
DECODE_VARIANTS = {"s": (1, 4), "h2": (2, 4), "h2k32": (2, 2), "h4k32": (4, 2)}
DECODE_SPLITS = (1, 2, 4, 8)
#: key splits that also have a serial kernel ("s<N>serial"): the same N splits, one after
#: another in one CTA, bit for bit what the cluster of N CTAs computes
DECODE_SERIAL_SPLITS = (4,)


#: key splits of the default decode kernel where thread-block clusters exist (sm_90+)
DEFAULT_KEY_SPLITS = 4
#: the default kernel computes the splits serially once the batch gives at least this many
#: (sequence, KV head) CTAs per multiprocessor without splitting
SERIAL_SPLITS_CTAS_PER_SM = 1.75


def default_decode_variant(hkv: int, clusters: bool) -> str:
    """The decode arithmetic used unless a kernel is forced: depends on the head layout and
    the device only.

    Never on the batch: a sequence's output is then the same bits at any batch size or
    padding, in the decode launch and in the mixed launch alike, which is what lets every
    graph mode generate exactly the eager tokens. With clusters, the keys of every
    (sequence, KV head) are split into DEFAULT_KEY_SPLITS parts: the split count is a
    constant and each split's tiles a function of the sequence's own length, and the
    partials merge in rank order. Without clusters, two KV heads per CTA (each key one
    contiguous run) or one. :func:`decode_kernel` picks which kernel computes it.
    """
    if clusters:
        return f"s{DEFAULT_KEY_SPLITS}"
    return "h2k32" if hkv % 2 == 0 else "s1"


def decode_kernel(rows: int, hkv: int, sm_count: int, clusters: bool) -> str:
    """The decode kernel for a launch of `rows` sequence rows: the default variant's cluster
    kernel (its splits on separate multiprocessors, for small batches) or, once rows * hkv
    CTAs fill SERIAL_SPLITS_CTAS_PER_SM per multiprocessor, its serial twin (no split's
    short pipeline left waiting). The two compute the same bits, so this choice, which does
    depend on the batch, changes no output (the GPU tests compare them bit for bit)."""
    variant = default_decode_variant(hkv, clusters)
    splits = int(variant[1:]) if variant[:1] == "s" and variant[1:].isdigit() else 0
    if splits in DECODE_SERIAL_SPLITS and rows * hkv >= SERIAL_SPLITS_CTAS_PER_SM * sm_count:
        return f"{variant}serial"
    return variant


def decode_kernel_parts(variant: str) -> tuple[str, int, bool]:
    """(kind, splits, serial) of a decode variant name; NotFoundError for an unknown one."""
    serial = variant.endswith("serial")
    base = variant[:-len("serial")] if serial else variant
    if base[:1] == "s" and base[1:].isdigit() and int(base[1:]) in (DECODE_SERIAL_SPLITS if serial else DECODE_SPLITS):
        return "s", int(base[1:]), serial
    if base in DECODE_VARIANTS and base != "s" and not serial:
        return base, 1, False
    raise NotFoundError(f"unknown decode variant {variant!r}; expected one of "
                        f"{[f's{n}' for n in DECODE_SPLITS] + [f's{n}serial' for n in DECODE_SERIAL_SPLITS]}"
                        f" or {[v for v in DECODE_VARIANTS if v != 's']}")


def _geometry(b: Bound, scale: Any) -> float:
    d, hq, hkv = b.dims["D"], b.dims["Hq"], b.dims["Hkv"]
    if d % 8 or d > 256:
        raise ArgumentError(f"head size D={d} must be a multiple of 8 and at most 256")
    if hq % hkv:
        raise ArgumentError(f"query heads Hq={hq} must be a multiple of KV heads Hkv={hkv} (GQA)")
    return require_float("scale", scale)


_CARVEOUT_SET: set[int] = set()


def _prefer_shared(name: str, smem: int) -> None:
    """Ask once per kernel for the largest shared-memory carveout, so that two CTAs of ~100 KB
    share an SM (a function attribute, not a stream operation: safe before or during capture)."""
    kern = get_kernel("attention", name, dynamic_smem=smem)
    if id(kern) not in _CARVEOUT_SET:  # loaded kernels live for the process: ids stay unique
        kern.preferred_shared_memory_carveout = 100
        _CARVEOUT_SET.add(id(kern))


def _cuda_core(q, kb, vb, out, b: Bound, ks: int, vs: int, int_args: tuple, mode: int, causal: bool,
               scale: float, stream: Any) -> str:
    t, hq, hkv, d = b.dims["T"], b.dims["Hq"], b.dims["Hkv"], b.dims["D"]
    tg = next(g for g in (8, 16, 32) if g * 8 >= d)
    group = hq // hkv
    gb = next(g for g in (8, 4, 2, 1) if group % g == 0)
    warps = 8 if gb * tg <= 128 else 4
    name = f"attention_{tag(b.dtypes['q'])}_tg{tg}_gb{gb}"
    launch("attention", name, (t, hq // gb), warps * 32,
           (out, q, kb, vb, *int_args, I32(mode), I32(bool(causal)), I32(hq), I32(hkv), I32(d),
            I64(b.row_strides["q"]), I64(ks), I64(vs), F32(scale)), stream)
    return name


def _flash(q, kb, vb, out, b: Bound, ks: int, vs: int, paged: tuple, starts: Any, num_seqs: Any, n_seg_cap: int,
           mode: int, causal: bool, scale: float, stream: Any, skip_single: bool = False) -> str:
    """FA2-style prefill over segments (mode 1: paged, 2: contiguous varlen).

    skip_single leaves the rows of one-query segments untouched (the decode kernel writes them).
    The grid is sized from host bounds only: every segment needs ceil(len/64) tiles, the
    padding rows past the last segment need the rest, and sum(ceil) <= ceil(T/64) + n_seg.
    """
    t, hq, hkv, d = b.dims["T"], b.dims["Hq"], b.dims["Hkv"], b.dims["D"]
    block_tables, max_blocks, block_size, seq_lens = paged
    name = f"flash_{tag(b.dtypes['q'])}_d{d}"
    smem = (_FLASH_ROWS + 2 * _FLASH_STAGES * 64) * d * 2
    _prefer_shared(name, smem)
    launch("attention", name, (-(-t // _FLASH_ROWS) + n_seg_cap + 1, hq), 128,
           (out, q, kb, vb, block_tables, I32(max_blocks), I32(block_size), seq_lens, starts, num_seqs,
            I32(n_seg_cap), I32(mode), I32(bool(causal)), I32(bool(skip_single)), I32(t), I32(hq), I32(hkv),
            I64(b.row_strides["q"]), I64(ks), I64(vs), F32(scale * _LOG2E)), stream, smem=smem)
    return name


def _decode(q, k_cache, v_cache, out, b: Bound, block_tables, seq_lens, query_start_loc, num_seqs, scale: float,
            stream: Any, variant: str | None, mixed: bool) -> str:
    """Split-KV tensor-core decode. mixed=False: row i is sequence i (every q_len is 1).
    mixed=True: one CTA per sequence row, serving only the sequences whose q_len is 1, at
    their row query_start_loc[s]."""
    t, hq, hkv, d = b.dims["T"], b.dims["Hq"], b.dims["Hkv"], b.dims["D"]
    s, max_blocks, bs = b.dims["S"], b.dims["MB"], b.dims["BS"]
    rows = s if mixed else t
    if variant is None:
        facts = device_facts()
        variant = decode_kernel(rows, hkv, facts.sm_count, facts.clusters)
    kind, splits, serial = decode_kernel_parts(variant)
    heads, wph = DECODE_VARIANTS[kind]
    if hkv % heads:
        raise ArgumentError(f"decode variant {variant!r} needs Hkv={hkv} to be a multiple of {heads}")
    name = f"flash_decode_{tag(b.dtypes['q'])}_d{d}_" + (variant if kind == "s" else kind)
    smem = heads * (16 + 2 * _DECODE_STAGES * 16 * wph) * d * 2
    _prefer_shared(name, smem)
    launch("attention", name, (1 if serial else splits, hkv // heads, rows), 32 * heads * wph,
           (out, q, k_cache, v_cache, block_tables, I32(max_blocks), I32(bs), seq_lens, query_start_loc,
            num_seqs, I32(s), I32(bool(mixed)), I32(hq), I32(hkv), I64(b.row_strides["q"]), F32(scale * _LOG2E)),
           stream, smem=smem)
    return name


def launch_paged_attention(q: Any, k_cache: Any, v_cache: Any, *, out: Any, block_tables: Any, seq_lens: Any,
                           query_start_loc: Any, num_seqs: Any, max_query_len: int, scale: float,
                           stream: Any = None, variant: str | None = None,
                           cuda_core: bool = False) -> tuple[str, ...]:
    """:func:`paged_attention`, returning the kernels it launched (in order).

    For tests and benchmarks: `variant` forces the decode kernel ("s1".."s8", "s4serial",
    "h2", "h2k32", "h4k32"; by default :func:`decode_kernel`: the arithmetic depends on Hkv
    only) and cuda_core=True the CUDA-core kernel for every head size.
    """
    b = _PAGED.bind(q=q, k_cache=k_cache, v_cache=v_cache, out=out, block_tables=block_tables,
                    seq_lens=seq_lens, query_start_loc=query_start_loc, num_seqs=num_seqs)
    max_query_len = require_int("max_query_len", max_query_len, 1)
    scale = _geometry(b, scale)
    b.on_device()
    t, hq, hkv, d, s = b.dims["T"], b.dims["Hq"], b.dims["Hkv"], b.dims["D"], b.dims["S"]
    if t == 0:
        return ()
    row = hkv * d  # the caches are contiguous: one slot is one row of Hkv * D
    meta = dict(block_tables=block_tables, seq_lens=seq_lens, query_start_loc=query_start_loc, num_seqs=num_seqs)
    # The decode kernel serves every one-query sequence, in both launches, so that a decode
    # row computes the same bits whether its step ran the decode or the mixed path.
    decode = not cuda_core and d in FLASH_HEAD_SIZES and hq // hkv <= 16 and max(t, s) <= _MAX_GRID_Z
    if decode and max_query_len == 1:
        return (_decode(q, k_cache, v_cache, out, b, **meta, scale=scale, stream=stream, variant=variant,
                        mixed=False),)
    if not cuda_core and d in FLASH_HEAD_SIZES:
        ran = [_flash(q, k_cache, v_cache, out, b, row, row, (block_tables, b.dims["MB"], b.dims["BS"], seq_lens),
                      query_start_loc, num_seqs, s, mode=1, causal=True, scale=scale, stream=stream,
                      skip_single=decode)]
        if decode and s > 0:
            ran.append(_decode(q, k_cache, v_cache, out, b, **meta, scale=scale, stream=stream, variant=variant,
                               mixed=True))
        return tuple(ran)
    int_args = (block_tables, I32(b.dims["MB"]), I32(b.dims["BS"]), seq_lens, query_start_loc, num_seqs,
                query_start_loc, I32(0))
    return (_cuda_core(q, k_cache, v_cache, out, b, row, row, int_args, 0 if max_query_len == 1 else 1, True,
                       scale, stream),)


def paged_attention(q: Any, k_cache: Any, v_cache: Any, *, out: Any, block_tables: Any, seq_lens: Any,
                    query_start_loc: Any, num_seqs: Any, max_query_len: int, scale: float,
                    stream: Any = None) -> Any:
    """Causal attention of q [T, Hq, D] over paged caches [num_blocks, block_size, Hkv, D].

    block_tables [S, max_blocks], seq_lens [S] (context including this step's tokens),
    query_start_loc [S+1] and num_seqs (1,) are int32 device arrays read on the device, so
    one captured graph serves any lengths. Query j of sequence s sits at position
    seq_lens[s] - q_len + j and sees keys 0..that position. max_query_len (host int) only
    picks the path: 1 means decode (row i is sequence i). Rows at or past
    query_start_loc[num_seqs], and sequences with seq_lens 0, are written as zeros.
    q rows may be strided; q, the caches and out must be 16-byte aligned (see the module).

    Batch invariance: for head sizes 64 and 128 a one-query sequence is always computed by
    the same decode arithmetic (alone in the decode path; next to the prefill kernel in the
    mixed path), whose choice depends on no batch property (the batch picks only between
    two kernels of identical bits), so its row is bit-identical at any batch size, padding
    or path. That is what lets a padded graph replay match eager exactly.
    """
    launch_paged_attention(q, k_cache, v_cache, out=out, block_tables=block_tables, seq_lens=seq_lens,
                           query_start_loc=query_start_loc, num_seqs=num_seqs, max_query_len=max_query_len,
                           scale=scale, stream=stream)
    return out


def launch_varlen_attention(q: Any, k: Any, v: Any, *, out: Any, cu_seqlens: Any, max_seqlen: int, causal: bool,
                            scale: float, stream: Any = None, cuda_core: bool = False) -> tuple[str, ...]:
    """:func:`varlen_attention`, returning the kernels it launched; cuda_core=True forces the
    CUDA-core kernel for every head size (benchmarks)."""
    b = _VARLEN.bind(q=q, k=k, v=v, out=out, cu_seqlens=cu_seqlens)
    require_int("max_seqlen", max_seqlen, 0)
    scale = _geometry(b, scale)
    b.on_device()
    n, d = b.dims["N"], b.dims["D"]
    if b.dims["T"] == 0:
        return ()
    ks, vs = b.row_strides["k"], b.row_strides["v"]
    if not cuda_core and d in FLASH_HEAD_SIZES:
        return (_flash(q, k, v, out, b, ks, vs, (cu_seqlens, 0, 1, cu_seqlens), cu_seqlens, cu_seqlens, n,
                       mode=2, causal=causal, scale=scale, stream=stream),)
    int_args = (cu_seqlens, I32(0), I32(1), cu_seqlens, cu_seqlens, cu_seqlens, cu_seqlens, I32(n))
    return (_cuda_core(q, k, v, out, b, ks, vs, int_args, 2, causal, scale, stream),)


def varlen_attention(q: Any, k: Any, v: Any, *, out: Any, cu_seqlens: Any, max_seqlen: int, causal: bool,
                     scale: float, stream: Any = None) -> Any:
    """Attention within each segment [cu_seqlens[i], cu_seqlens[i+1]) of q [T, Hq, D], k/v [T, Hkv, D].

    causal=True for a decoder prefill, False for the vision encoder. cu_seqlens [n+1] int32
    (n >= 1) lives on the device; rows past cu_seqlens[n] are written as zeros. Rows of
    q/k/v may be strided; q, k, v and out must be 16-byte aligned (see the module).
    max_seqlen (host int, >= the longest segment) is accepted for API symmetry; the kernel
    does not need it.
    """
    launch_varlen_attention(q, k, v, out=out, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, causal=causal,
                            scale=scale, stream=stream)
    return out
