"""The kernel families in kernels/*.cu, their parts, and the architectures they build for.

Pure (no CuPy). A family is one source file; its kernels are plain ``extern "C"``
instantiations whose names are listed here, so the compile check can prove that every
name a launcher uses was compiled. A large family is split into parts: the source guards
groups of instantiations with ``#if CG_IN_PART(n)`` and each part is compiled as its own
NVRTC program (``-DCGRAPH_PART=n``) and loaded as its own module, so that the parts of a
cold compile run in parallel. :data:`PARTS` says which part defines which kernel; the
compile check fails if a part's cubin lacks any name listed for it.
"""

from __future__ import annotations

from cgraph.core.errors import ArgumentError, NotFoundError
from cgraph.kernels.gemm_plan import GEMV_ROWS, WGMMA_SPLITS, WGMMA_TILES

#: oldest architecture the kernels support (cp.async, bf16 mma.sync, ldmatrix: sm_80).
MIN_ARCH = 80

_DT_VEC = (("f16", 8), ("bf16", 8), ("f32", 4))


def _elementwise(prefix: str) -> tuple[tuple[str, ...], ...]:
    return (tuple(f"{prefix}_{dt}_v{v}" for dt, vec in _DT_VEC for v in (vec, 1)),)


def _attention() -> tuple[tuple[str, ...], ...]:
    # mirrors the CG_IN_PART guards of kernels/attention.cu
    parts = [tuple(f"attention_{dt}_tg{tg}_gb{gb}" for gb in (1, 2, 4, 8))
             for dt in ("f16", "bf16") for tg in (8, 16, 32)]
    parts.append(tuple(f"flash_{dt}_d{d}" for dt in ("f16", "bf16") for d in (64, 128)))
    for dt in ("f16", "bf16"):
        for d in (64, 128):
            parts.append(tuple(f"flash_decode_{dt}_d{d}_s{s}" for s in (1, 2, 4, 8)) + (f"flash_decode_{dt}_d{d}_s4serial",))
            parts.append(tuple(f"flash_decode_{dt}_d{d}_{v}" for v in ("h2", "h2k32", "h4k32")))
    return tuple(parts)


def _gemm() -> tuple[tuple[str, ...], ...]:
    # mirrors the CG_IN_PART guards of kernels/gemm.cu
    parts = []
    for dt in ("f16", "bf16"):
        for s in (1, 2, 4, 8):
            parts.append(tuple(f"gemm_{dt}_{t}_s{s}" for t in ("t16", "t32", "t64")))
            parts.append(tuple(f"gemm_{dt}_{t}_s{s}" for t in ("t128", "t256")))
    small = [f"gemv_{dt}_m{m}" for dt in ("f16", "bf16") for m in GEMV_ROWS]
    small += [f"gemm_{dt}_stream" for dt in ("f16", "bf16")]
    small += [f"gemm_fallback_{dt}" for dt in ("f16", "bf16")]
    parts.append(tuple(small))
    return tuple(parts)


def _gemm_sm90() -> tuple[tuple[str, ...], ...]:
    # the planner's table: the compile check then proves every wgmma plan has its kernel
    return tuple(tuple(f"gemm_{dt}_{tile}_s{s}" for tile in WGMMA_TILES)
                 for dt in ("f16", "bf16") for s in WGMMA_SPLITS)


#: family (file stem in kernels/) -> kernel names of each part (part n: -DCGRAPH_PART=n).
PARTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "embedding": _elementwise("embedding"),
    "norm": _elementwise("rms_norm"),
    "activation": _elementwise("silu_and_mul"),
    "rotary": (_elementwise("rotary")[0] + _elementwise("rotary_cache")[0],),
    "cache": _elementwise("reshape_and_cache"),
    "sampling": ((*_elementwise("argmax")[0], *_elementwise("sample")[0], *_elementwise("sample_gen")[0]),),
    "random": (("philox_bits", "philox_uniform", "philox_advance"),),
    "tokens": (("feed_tokens", "publish_tokens", "advance_decode", "start_decode_loop", "decode_loop_step"),),
    "control": (("set_condition",),),
    "attention": _attention(),
    "gemm": _gemm(),
    "gemm_sm90": _gemm_sm90(),
}
#: family -> every kernel name it must define (all parts).
FAMILIES: dict[str, tuple[str, ...]] = {f: tuple(n for part in parts for n in part) for f, parts in PARTS.items()}
#: families whose instructions exist on one target only: family -> (compute capability, -arch).
ARCH_SPECIFIC: dict[str, tuple[int, str]] = {"gemm_sm90": (90, "sm_90a")}

_PART_OF: dict[tuple[str, str], int] = {(f, n): i for f, parts in PARTS.items()
                                        for i, part in enumerate(parts) for n in part}


def check_arch(arch: int) -> int:
    """`arch` as an int, or ArgumentError when the kernels cannot be built for it."""
    if not isinstance(arch, int) or isinstance(arch, bool):
        raise ArgumentError(f"arch must be an int such as 80 or 90 (sm_80, sm_90), got {arch!r}")
    if arch < MIN_ARCH:
        raise ArgumentError(
            f"sm_{arch} is not supported: cgraph's kernels need compute capability "
            f"{MIN_ARCH // 10}.{MIN_ARCH % 10} or newer (cp.async, bf16 mma.sync); "
            "use --arch 80, 86, 89 or 90")
    return arch


def families_for(arch: int) -> list[str]:
    """Families that are built for sm_<arch>: every portable one, plus those specific to it."""
    arch = check_arch(arch)
    return sorted(f for f in FAMILIES if f not in ARCH_SPECIFIC or ARCH_SPECIFIC[f][0] == arch)


def target(family: str, arch: int) -> str:
    """The NVRTC -arch value of `family` on sm_<arch> (sm_90a for the wgmma family)."""
    if family not in FAMILIES:
        raise NotFoundError(f"unknown kernel family {family!r}; expected one of {sorted(FAMILIES)}")
    arch = check_arch(arch)
    if family in ARCH_SPECIFIC:
        cc, tgt = ARCH_SPECIFIC[family]
        if arch != cc:
            raise ArgumentError(f"kernel family {family!r} is built for {tgt} only, not sm_{arch}; "
                                f"use families_for({arch}) to list the families of an architecture")
        return tgt
    return f"sm_{arch}"


def part_of(family: str, name: str) -> int:
    """Index of the part of `family` that defines kernel `name`."""
    part = _PART_OF.get((family, name))
    if part is None:
        raise NotFoundError(f"kernel {name!r} is not part of family {family!r}; "
                            f"it defines {len(FAMILIES.get(family, ()))} kernels listed in "
                            "cgraph.kernels.families.PARTS")
    return part
