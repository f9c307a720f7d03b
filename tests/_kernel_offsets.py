"""Child-process side of tests/test_kernels_offsets_gpu.py: one launcher, every pointer at
byte offsets from an aligned address.

For each array argument in turn (and for all at once), the argument is placed 2, 4 and 8
bytes past a 256-byte boundary (where that is a whole number of its elements: those
launches must compute the NumPy reference's result) and a fraction of an element past it
(those must raise ArgumentError naming it); arguments whose kernels always move 16-byte
pieces must raise below 16 bytes and run at 16. Data moves by plain memcpy into raw byte
buffers, so no CuPy kernel touches a misaligned view. After every case the device is
synchronized, so a fault is attributed to its case; the first fault ends the process
(exit 3) since the CUDA context is then lost. Exit 0: every case behaved.

Run as: python -c "<put tests/ on sys.path>; import _kernel_offsets; _kernel_offsets.main([LAUNCHER])".
"""

from __future__ import annotations

import re
import sys
import traceback

import numpy as np

ALIGN = 256
OFFSETS = (2, 4, 8)


class Placed:
    """A copy of a host array in device memory `offset` bytes past a 256-byte boundary."""

    def __init__(self, cp, host: np.ndarray, offset: int):
        self.host = np.ascontiguousarray(host)
        n = self.host.nbytes
        self.buf = cp.empty(n + 2 * ALIGN, dtype=cp.uint8)
        start = (-self.buf.data.ptr) % ALIGN + offset
        self.ptr = self.buf.data + start
        self.ptr.copy_from_host(self.host.ctypes.data, n)
        self.array = self.buf[start:start + n].view(self.host.dtype).reshape(self.host.shape)
        assert self.array.data.ptr % ALIGN == offset

    def get(self) -> np.ndarray:
        out = np.empty_like(self.host)
        self.ptr.copy_to_host(out.ctypes.data, out.nbytes)
        return out


class Runner:
    """Runs cases, records misbehaviour; a device error ends the process."""

    def __init__(self, cp, error_type: type):
        self.cp, self.error_type, self.cases, self.failures = cp, error_type, 0, []
        self.device_errors = (cp.cuda.runtime.CUDARuntimeError, cp.cuda.driver.CUDADriverError)

    def case(self, label: str, fn, rejects: str | None) -> None:
        self.cases += 1
        try:
            fn()
            self.cp.cuda.Device().synchronize()  # a fault shows here, attributed to this case
        except self.error_type as exc:
            if rejects is None:
                self.failures.append(f"{label}: unexpected {type(exc).__name__}: {exc}")
            elif not re.search(rf"(^|\s){re.escape(rejects)}\s", str(exc)):
                self.failures.append(f"{label}: the error does not name {rejects}: {exc}")
            return
        except AssertionError as exc:
            self.failures.append(f"{label}: {exc}")
            return
        except self.device_errors:  # a device fault: the context is lost, stop here
            sys.stderr.write(f"{label}: DEVICE ERROR\n{traceback.format_exc()}")
            sys.stderr.flush()
            raise SystemExit(3) from None
        except Exception:  # noqa: BLE001 - any other error is this case's failure
            self.failures.append(f"{label}: {traceback.format_exc()}")
            return
        if rejects is not None:
            self.failures.append(f"{label}: expected an ArgumentError naming {rejects}, but it ran")

    def sweep(self, label: str, items: dict[str, int], go, need16: tuple[str, ...] = ()) -> None:
        """All arguments aligned, then each argument of `items` (name -> itemsize) at each
        offset, then all at once (16 bytes: aligned, but not to 256)."""
        self.case(f"{label} aligned", lambda: go({}), None)
        for arg, item in items.items():
            for off in OFFSETS:
                if off % item == 0:
                    self.case(f"{label} {arg}+{off}", lambda a=arg, o=off: go({a: o}), arg if arg in need16 else None)
            if item > 1:  # a fraction of an element past the boundary
                off = 1 if item == 2 else 2
                self.case(f"{label} {arg}+{off} (mid-element)", lambda a=arg, o=off: go({a: o}), arg)
            if arg in need16:
                self.case(f"{label} {arg}+16", lambda a=arg: go({a: 16}), None)
        for off in (*OFFSETS, 16):
            if not need16 and all(off % item == 0 for item in items.values()):
                self.case(f"{label} all+{off}", lambda o=off: go({a: o for a in items}), None)


def _nan(shape, dt) -> np.ndarray:
    return np.full(shape, np.nan if np.dtype(dt).kind == "f" else -1, dtype=dt)


def _randn(rng, shape, dt, scale=1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dt)


def check_embedding(cp, run, K, ref, chk) -> None:
    for dt in ("float16", "float32"):
        t, vocab, hidden = 5, 40, 64
        table, ids = _randn(chk.RNG, (vocab, hidden), dt), chk.RNG.integers(-2, vocab + 2, size=t).astype(np.int32)
        want = ref.embedding(ids, table.astype(np.float64))

        def go(off, table=table, ids=ids, want=want, dt=dt):
            out = Placed(cp, _nan((t, hidden), dt), off.get("out", 0))
            K.embedding(Placed(cp, ids, off.get("ids", 0)).array, Placed(cp, table, off.get("table", 0)).array,
                        out=out.array)
            assert np.array_equal(out.get().astype(np.float64), want), f"wrong rows, seed={chk.SEED}"
        run.sweep(f"embedding {dt}", {"ids": 4, "table": table.itemsize, "out": table.itemsize}, go)


def check_rms_norm(cp, run, K, ref, chk) -> None:
    for dt in ("float16", "float32"):
        t, h = 5, 64
        x, w, r = (_randn(chk.RNG, s, dt) for s in ((t, h), (h,), (t, h)))
        want, new_r = ref.rms_norm(x.astype(np.float64), w.astype(np.float64), 1e-5, residual=r.astype(np.float64),
                                   round_to=lambda z, dt=dt: np.asarray(z, np.float32).astype(dt).astype(np.float64))

        def go(off, x=x, w=w, r=r, want=want, new_r=new_r, dt=dt):
            out, res = Placed(cp, _nan((t, h), dt), off.get("out", 0)), Placed(cp, r, off.get("residual", 0))
            K.rms_norm(Placed(cp, x, off.get("x", 0)).array, Placed(cp, w, off.get("weight", 0)).array, 1e-5,
                       out=out.array, residual=res.array)
            chk.assert_close(out.get(), want, dt, "rms_norm", fp32_ops=chk.RMS_FP32_OPS)
            assert np.array_equal(res.get().astype(np.float64), new_r), f"residual, seed={chk.SEED}"
        item = np.dtype(dt).itemsize
        run.sweep(f"rms_norm {dt}", {"x": item, "weight": item, "out": item, "residual": item}, go)


def check_silu_and_mul(cp, run, K, ref, chk) -> None:
    for dt in ("float16", "float32"):
        t, i = 5, 32
        x = _randn(chk.RNG, (t, 2 * i), dt, 2.0)
        want = ref.silu_and_mul(x.astype(np.float64))

        def go(off, x=x, want=want, dt=dt):
            out = Placed(cp, _nan((t, i), dt), off.get("out", 0))
            K.silu_and_mul(Placed(cp, x, off.get("x", 0)).array, out=out.array)
            chk.assert_close(out.get(), want, dt, "silu_and_mul", fp32_ops=chk.SILU_FP32_OPS)
        run.sweep(f"silu_and_mul {dt}", {"x": x.itemsize, "out": x.itemsize}, go)


def check_argmax(cp, run, K, ref, chk) -> None:
    for dt in ("float16", "float32"):
        logits = _randn(chk.RNG, (4, 96), dt)
        want = ref.argmax(logits)

        def go(off, logits=logits, want=want):
            out = Placed(cp, _nan((4,), "int32"), off.get("out", 0))
            K.argmax(Placed(cp, logits, off.get("logits", 0)).array, out=out.array)
            assert np.array_equal(out.get(), want), f"argmax, seed={chk.SEED}"
        run.sweep(f"argmax {dt}", {"logits": logits.itemsize, "out": 4}, go)


def check_rotary_embedding(cp, run, K, ref, chk) -> None:
    for dt in ("float16", "float32"):
        t, hq, hk, d, max_pos = 5, 2, 1, 32, 50
        q, k = _randn(chk.RNG, (t, hq * d), dt), _randn(chk.RNG, (t, hk * d), dt)
        pos = chk.RNG.integers(-1, max_pos + 1, size=t).astype(np.int32)
        cache = ref.cos_sin_cache(max_pos, d)
        want_q, want_k = (ref.rotary_embedding(pos, a.astype(np.float64), cache, d) for a in (q, k))
        atol = 8 * chk.U32 * max(np.abs(q).max(), np.abs(k).max())

        def go(off, q=q, k=k, pos=pos, want_q=want_q, want_k=want_k, atol=atol, dt=dt):
            qd, kd = Placed(cp, q, off.get("q", 0)), Placed(cp, k, off.get("k", 0))
            K.rotary_embedding(Placed(cp, pos, off.get("positions", 0)).array, qd.array, kd.array,
                               Placed(cp, cache, off.get("cos_sin_cache", 0)).array, head_size=d)
            chk.assert_close(qd.get(), want_q, dt, "rotary q", atol=atol)
            chk.assert_close(kd.get(), want_k, dt, "rotary k", atol=atol)
        item = q.itemsize
        run.sweep(f"rotary {dt}", {"positions": 4, "q": item, "k": item, "cos_sin_cache": 4}, go)


def check_reshape_and_cache(cp, run, K, ref, chk) -> None:
    for dt in ("float16", "float32"):
        t, nb, bs, hkv, d = 6, 4, 8, 2, 16
        k, v = _randn(chk.RNG, (t, hkv, d), dt), _randn(chk.RNG, (t, hkv, d), dt)
        kc, vc = _randn(chk.RNG, (nb, bs, hkv, d), dt), _randn(chk.RNG, (nb, bs, hkv, d), dt)
        slots = chk.RNG.permutation(nb * bs)[:t].astype(np.int32)
        slots[1] = -1
        want_k, want_v = ref.reshape_and_cache(k, v, kc, vc, slots)

        def go(off, k=k, v=v, kc=kc, vc=vc, slots=slots, want_k=want_k, want_v=want_v):
            kcd, vcd = Placed(cp, kc, off.get("k_cache", 0)), Placed(cp, vc, off.get("v_cache", 0))
            K.reshape_and_cache(Placed(cp, k, off.get("k", 0)).array, Placed(cp, v, off.get("v", 0)).array, kcd.array,
                                vcd.array, Placed(cp, slots, off.get("slot_mapping", 0)).array)
            assert np.array_equal(kcd.get(), want_k) and np.array_equal(vcd.get(), want_v), f"caches, seed={chk.SEED}"
        item = k.itemsize
        run.sweep(f"reshape_and_cache {dt}", {"k": item, "v": item, "k_cache": item, "v_cache": item,
                                              "slot_mapping": 4}, go)


def check_feed_tokens(cp, run, K, ref, chk) -> None:
    ids = chk.RNG.integers(0, 1000, size=9).astype(np.int32)
    sampled = chk.RNG.integers(0, 1000, size=4).astype(np.int32)
    source = chk.RNG.integers(-2, 6, size=9).astype(np.int32)
    want = ref.feed_tokens(ids, source, sampled)

    def go(off):
        dev_ids = Placed(cp, ids, off.get("input_ids", 0))
        K.feed_tokens(dev_ids.array, Placed(cp, source, off.get("token_source", 0)).array,
                      Placed(cp, sampled, off.get("sampled", 0)).array)
        assert np.array_equal(dev_ids.get(), want), f"feed_tokens, seed={chk.SEED}"
    run.sweep("feed_tokens", {"input_ids": 4, "token_source": 4, "sampled": 4}, go)


def check_gemm(cp, run, K, ref, chk) -> None:
    from cgraph.kernels.matmul import launch_gemm  # noqa: PLC0415

    cc = int(cp.cuda.Device().compute_capability)
    forced = [{}, {}, {}, {}, dict(tile="t64", split=1)] + ([dict(tile="t64", split=2)] if cc >= 90 else [])
    for m, force in zip((2, 16, 64, 200, 64, 64), forced):
        n, k = 64, 128  # N % 4 == 0: the tiled epilogues would store 8 bytes at a time
        a, w, b = _randn(chk.RNG, (m, k), "float16"), _randn(chk.RNG, (n, k), "float16", k ** -0.5), _randn(
            chk.RNG, (n,), "float16")
        a64, w64, b64 = a.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
        want = ref.gemm(a64, w64, b64)

        def go(off, a=a, w=w, b=b, want=want, a64=a64, w64=w64, b64=b64, m=m, force=force):
            out = Placed(cp, _nan((m, n), "float16"), off.get("out", 0))
            plan = launch_gemm(Placed(cp, a, off.get("a", 0)).array, Placed(cp, w, off.get("w", 0)).array,
                               out=out.array, bias=Placed(cp, b, off.get("bias", 0)).array, **force)
            unaligned_operand = off.get("a", 0) % 16 or off.get("w", 0) % 16
            assert (plan.kind == "fallback") == bool(unaligned_operand), f"plan {plan} for offsets {off}"
            chk.assert_close(out.get(), want, "float16", f"gemm plan {plan}",
                             atol=chk.gemm_atol(a64, w64, b64, fallback=plan.kind == "fallback"))
        run.sweep(f"gemm M={m} {force}", {"a": 2, "w": 2, "out": 2, "bias": 2}, go)

    patches, weight = _randn(chk.RNG, (9, 48), "float16"), _randn(chk.RNG, (32, 48), "float16", 0.15)
    want = ref.gemm(patches.astype(np.float64), weight.astype(np.float64))

    def go_patch(off):
        out = Placed(cp, _nan((9, 32), "float16"), off.get("out", 0))
        K.patch_embed(Placed(cp, patches, off.get("patches", 0)).array, Placed(cp, weight, 0).array, out=out.array)
        chk.assert_close(out.get(), want, "float16", "patch_embed",
                         atol=chk.gemm_atol(patches.astype(np.float64), weight.astype(np.float64), None, True))
    run.sweep("patch_embed", {"patches": 2, "out": 2}, go_patch)


def _paged_inputs(rng, q_lens, ctx, hq, hkv, d, bs=8):
    need = [max(1, -(-n // bs)) for n in ctx]
    nb = sum(need) + 2
    tables = np.zeros((len(ctx), max(need)), np.int32)
    perm, used = rng.permutation(nb), 0
    for s, n in enumerate(need):
        tables[s, :n] = perm[used:used + n]
        used += n
    qsl = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    arrays = dict(q=_randn(rng, (int(qsl[-1]) + 2, hq, d), "float16"),
                  k_cache=_randn(rng, (nb, bs, hkv, d), "float16"), v_cache=_randn(rng, (nb, bs, hkv, d), "float16"),
                  block_tables=tables, seq_lens=np.array(ctx, np.int32), query_start_loc=qsl,
                  num_seqs=np.array([len(ctx)], np.int32))
    return arrays


def check_paged_attention(cp, run, K, ref, chk) -> None:
    # decode (tensor cores), mixed prefill + decode (tensor cores), CUDA-core decode (D = 80)
    for q_lens, ctx, d, mql in (([1, 1, 1], [9, 30, 1], 64, 1), ([3, 1, 2], [10, 17, 2], 64, 3),
                                ([1, 1], [12, 5], 80, 1)):
        hq, hkv = 4, 2
        arr = _paged_inputs(chk.RNG, q_lens, ctx, hq, hkv, d)
        f64 = {n: a.astype(np.float64) for n, a in arr.items() if a.dtype == np.float16}
        meta = (arr["block_tables"], arr["seq_lens"], arr["query_start_loc"], len(ctx), 0.125)
        want = ref.paged_attention(f64["q"], f64["k_cache"], f64["v_cache"], *meta)
        abs_v = ref.paged_attention(f64["q"], f64["k_cache"], np.abs(f64["v_cache"]), *meta)
        atol = chk.attention_atol("float16", abs_v)

        def go(off, arr=arr, want=want, atol=atol, mql=mql):
            out = Placed(cp, _nan(arr["q"].shape, "float16"), off.get("out", 0))
            dev = {n: Placed(cp, a, off.get(n, 0)).array for n, a in arr.items()}
            K.paged_attention(dev.pop("q"), dev.pop("k_cache"), dev.pop("v_cache"), out=out.array,
                              max_query_len=mql, scale=0.125, **dev)
            chk.assert_close(out.get(), want, "float16", "paged_attention", atol=atol)
        items = {n: a.itemsize for n, a in arr.items()}
        run.sweep(f"paged_attention D={d} max_query_len={mql}", {**items, "out": 2}, go,
                  need16=("q", "k_cache", "v_cache", "out"))


def check_varlen_attention(cp, run, K, ref, chk) -> None:
    for d in (64, 80):  # tensor-core prefill, CUDA-core kernel
        hq, hkv = 4, 2
        cu = np.array([0, 5, 6, 19], np.int32)
        t = int(cu[-1]) + 3
        arr = dict(q=_randn(chk.RNG, (t, hq, d), "float16"), k=_randn(chk.RNG, (t, hkv, d), "float16"),
                   v=_randn(chk.RNG, (t, hkv, d), "float16"), cu_seqlens=cu)
        f64 = [arr[n].astype(np.float64) for n in ("q", "k", "v")]
        want = ref.varlen_attention(*f64, cu, False, 0.125)
        atol = chk.attention_atol("float16", ref.varlen_attention(f64[0], f64[1], np.abs(f64[2]), cu, False, 0.125))

        def go(off, arr=arr, want=want, atol=atol):
            out = Placed(cp, _nan(arr["q"].shape, "float16"), off.get("out", 0))
            dev = {n: Placed(cp, a, off.get(n, 0)).array for n, a in arr.items()}
            K.varlen_attention(dev["q"], dev["k"], dev["v"], out=out.array, cu_seqlens=dev["cu_seqlens"],
                               max_seqlen=13, causal=False, scale=0.125)
            chk.assert_close(out.get(), want, "float16", "varlen_attention", atol=atol)
        run.sweep(f"varlen_attention D={d}", {"q": 2, "k": 2, "v": 2, "out": 2, "cu_seqlens": 4}, go,
                  need16=("q", "k", "v", "out"))


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}


def main(argv: list[str]) -> int:
    from cgraph.core.errors import ArgumentError  # noqa: PLC0415
    from cgraph.cuda.device import require_device  # noqa: PLC0415

    import _kernel_checks as chk  # noqa: PLC0415 - tests/ is on sys.path in the child
    import cgraph.kernels as K  # noqa: PLC0415
    from cgraph.kernels import reference as ref  # noqa: PLC0415

    cp = require_device()
    run = Runner(cp, ArgumentError)
    for name in argv:
        CHECKS[name](cp, run, K, ref, chk)
    for line in run.failures:
        print(f"FAILED {line}", file=sys.stderr)
    print(f"{', '.join(argv)}: {run.cases} cases, {len(run.failures)} failed (seed {chk.SEED})")
    return 1 if run.failures else 0

