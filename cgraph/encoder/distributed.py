"""Data-parallel encoding over several GPUs with NCCL (cupy.cuda.nccl), one process per GPU.

Every rank receives the same image list and computes the same ShardPlan (load_balance by
patch count), encodes its own images with its local EncoderGraphManager, packs its outputs
into one block padded to the largest rank's token count, all-gathers the blocks and
unpacks every image's rows in input order. All ranks end with all outputs.

Run the 2-GPU check or benchmark (spawns one process per GPU):
    python -m cgraph.encoder.distributed --check [--world 2]
    python -m cgraph.encoder.distributed --bench [--world 2]
NCCL_NVLS_ENABLE=0 is set for the spawned processes (NVLink multicast stays off).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from cgraph._gpu import require_device
from cgraph.encoder.sharding import ShardPlan, pack_rank_outputs, shard_items, unpack_gathered


def _nccl_dtype(nccl: Any, dtype: Any) -> int:
    names = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "bfloat16": "NCCL_BFLOAT16",
             "int32": "NCCL_INT32"}
    try:
        return getattr(nccl, names[str(dtype)])
    except (KeyError, AttributeError):
        raise TypeError(f"no NCCL data type for {dtype}; use float16, bfloat16, float32 or int32") from None


class DataParallelEncoder:
    """Shards images over ranks, encodes locally (graphs), all-gathers, restores input order.

    encode_local: callable(list of images) -> list of [tokens, out_dim] arrays (for example
    EncoderGraphManager.execute). comm: a cupy.cuda.nccl.NcclCommunicator for this rank.
    """

    def __init__(self, model: Any, encode_local: Any, comm: Any, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self.model, self.encode_local = model, encode_local
        self.comm, self.rank, self.world_size = comm, rank, world_size
        self._cp = require_device()
        from cupy.cuda import nccl  # noqa: PLC0415 - only with a GPU and NCCL

        self._nccl = nccl

    def plan(self, images: Sequence[Any]) -> ShardPlan:
        """The shard plan every rank computes for these images (same on all ranks)."""
        shapes = [im.grid if hasattr(im, "grid") else None for im in images]
        tokens, patches = [], []
        for im, grid in zip(images, shapes):
            if grid is not None:
                rows, cols = grid
                n = rows * cols
            else:
                h, w = int(im.shape[1]), int(im.shape[2])
                n = (h // self.model.spec.patch) * (w // self.model.spec.patch)
            tokens.append(n // 4)
            patches.append(n)
        return shard_items(tokens, self.world_size, sizes=patches)

    def execute(self, images: Sequence[Any]) -> list[Any]:
        """Encode `images` across all ranks; every rank returns all outputs in input order."""
        cp, nccl = self._cp, self._nccl
        plan = self.plan(images)
        local = [images[i] for i in plan.local_items(self.rank)]
        outs = self.encode_local(local) if local else []
        out_dim = self.model.spec.out_dim
        rows = plan.max_rank_tokens
        if rows == 0:
            return []
        block = cp.empty((rows, out_dim), self.model.dtype)
        pack_rank_outputs(outs, plan, self.rank, block)
        gathered = cp.empty((self.world_size * rows, out_dim), self.model.dtype)
        stream = cp.cuda.get_current_stream()
        self.comm.allGather(block.data.ptr, gathered.data.ptr, block.size,
                            _nccl_dtype(nccl, block.dtype), stream.ptr)
        return unpack_gathered(gathered, plan)  # views of a fresh buffer: nothing overwrites them

    def barrier(self) -> None:
        """Wait until every rank reaches this point (an all-reduce of one int)."""
        cp = self._cp
        x = cp.ones(1, cp.int32)
        stream = cp.cuda.get_current_stream()
        self.comm.allReduce(x.data.ptr, x.data.ptr, 1, self._nccl.NCCL_INT32, self._nccl.NCCL_SUM, stream.ptr)
        stream.synchronize()


# ---------------------------------------------------------------- script entry
BENCH_SPEC = dict(channels=3, patch=8, hidden=128, heads=2, layers=2, mlp=256, merger=256,
                  out_dim=256, max_grid=128)


def _worker(rank: int, world: int, mode: str, args: dict, uid_q: Any, res_q: Any) -> None:
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    try:
        import numpy as np  # noqa: PLC0415

        cp = require_device()
        from cupy.cuda import nccl  # noqa: PLC0415

        from cgraph.encoder.manager import EncoderGraphManager  # noqa: PLC0415
        from cgraph.encoder.model import EncoderSpec, VisionEncoder  # noqa: PLC0415
        from cgraph.encoder.planning import generate_budgets  # noqa: PLC0415
        from cgraph.encoder.workload import make_images, mixed_grids  # noqa: PLC0415

        cp.cuda.Device(rank).use()
        if rank == 0:
            uid = nccl.get_unique_id()
            for _ in range(world - 1):
                uid_q.put(uid)
        else:
            uid = uid_q.get(timeout=120)
        comm = nccl.NcclCommunicator(world, uid, rank)

        spec = EncoderSpec(**BENCH_SPEC)
        model = VisionEncoder(spec, seed=7)  # same seed: identical weights on every rank
        grids = mixed_grids(args["n"], 16, args["max_tokens"], seed=args["seed"], max_side=spec.max_grid // 2)
        host = make_images(grids, spec.channels, spec.patch, seed=args["seed"])
        images = [model.prepare(cp.asarray(h)) for h in host]
        budgets = generate_budgets(args["min_budget"], args["max_tokens"])
        mgr = EncoderGraphManager(model, budgets, args["max_batch"])
        dp = DataParallelEncoder(model, mgr.execute, comm, rank, world)

        if mode == "check":
            outs = dp.execute(images)
            single = mgr.execute(images) if rank == 0 else None
            cp.cuda.Device().synchronize()
            result = {"rank": rank, "items": len(outs)}
            if rank == 0:
                worst = 0.0
                ok = len(outs) == len(single)
                for a, b in zip(outs, single):
                    if a.shape != b.shape:
                        ok = False
                        continue
                    d = float(cp.abs(a.astype(cp.float32) - b.astype(cp.float32)).max()) if a.size else 0.0
                    worst = max(worst, d)
                result.update(ok=ok and worst <= 2e-2, max_abs_diff=worst,
                              local_items=len(dp.plan(images).local_items(0)))
            res_q.put(result)
        else:
            reps = args["reps"]
            dp.barrier()
            single_s = None
            if rank == 0:  # single-GPU throughput first, the other ranks wait at the barrier
                mgr.execute(images)
                cp.cuda.Device().synchronize()
                t0 = time.perf_counter()
                for _ in range(reps):
                    mgr.execute(images)
                cp.cuda.Device().synchronize()
                single_s = (time.perf_counter() - t0) / reps
            dp.barrier()
            dp.execute(images)
            dp.barrier()
            t0 = time.perf_counter()
            for _ in range(reps):
                dp.execute(images)
            cp.cuda.Device().synchronize()
            dp.barrier()
            dp_s = (time.perf_counter() - t0) / reps
            plan = dp.plan(images)
            res_q.put({"rank": rank, "single_s": single_s, "dp_s": dp_s,
                       "rank_tokens": list(plan.rank_tokens), "n": len(images),
                       "tokens": int(np.sum([im.tokens for im in images]))})
        mgr.close()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which prints it
        res_q.put({"rank": rank, "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()})


def launch(mode: str, world: int, args: dict, timeout: float = 540.0) -> list[dict]:
    """Spawn `world` worker processes (one per GPU) and collect their result dicts."""
    import multiprocessing as mp  # noqa: PLC0415

    os.environ["NCCL_NVLS_ENABLE"] = "0"  # inherited by the spawned processes
    ctx = mp.get_context("spawn")
    uid_q, res_q = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, world, mode, args, uid_q, res_q)) for r in range(world)]
    for p in procs:
        p.start()
    results = []
    deadline = time.time() + timeout
    try:
        while len(results) < world and time.time() < deadline:
            try:
                results.append(res_q.get(timeout=5))
            except Exception:  # noqa: BLE001 - queue.Empty: check the workers are alive
                if any(p.exitcode not in (None, 0) for p in procs) and res_q.empty():
                    break
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    return sorted(results, key=lambda r: r["rank"])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", action="store_true", help="DP outputs equal single-GPU outputs")
    g.add_argument("--bench", action="store_true", help="throughput of WORLD GPUs against one")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--n", type=int, default=None, help="images (check: 48, bench: 256)")
    ap.add_argument("--max-tokens", type=int, default=None, help="largest image/budget (check 1024, bench 4096)")
    ap.add_argument("--min-budget", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cp = require_device()
    visible = cp.cuda.runtime.getDeviceCount()
    if visible < a.world:
        print(f"FAIL: --world {a.world} needs {a.world} GPUs, {visible} visible")
        return 2
    mode = "check" if a.check else "bench"
    args = dict(n=a.n or (48 if a.check else 256), max_tokens=a.max_tokens or (1024 if a.check else 4096),
                min_budget=a.min_budget, max_batch=a.max_batch, reps=a.reps, seed=a.seed)
    results = launch(mode, a.world, args)
    errors = [r for r in results if "error" in r]
    if errors or len(results) < a.world:
        for r in errors:
            print(f"rank {r['rank']} failed: {r['error']}\n{r['traceback']}", file=sys.stderr)
        print(f"FAIL: {len(results) - len(errors)}/{a.world} ranks finished")
        return 1
    if a.check:
        r0 = results[0]
        verdict = "PASS" if r0["ok"] else "FAIL"
        print(f"{verdict}: data-parallel encoder on {a.world} GPUs, {args['n']} images, "
              f"max |dp - single| = {r0['max_abs_diff']:.3g}, rank 0 encoded {r0['local_items']} images")
        return 0 if r0["ok"] else 1
    single = results[0]["single_s"]
    dp = max(r["dp_s"] for r in results)
    from cgraph.bench._report import write_results  # noqa: PLC0415

    n, tokens = results[0]["n"], results[0]["tokens"]
    rows = [
        {"setup": "1 GPU, budget graphs", "ms_per_pass": single * 1e3, "images_per_s": n / single,
         "speedup": 1.0},
        {"setup": f"{a.world} GPUs, DP + graphs + all-gather", "ms_per_pass": dp * 1e3,
         "images_per_s": n / dp, "speedup": single / dp},
    ]
    write_results("encoder_dp", rows, title=f"Encoder data parallel: {a.world} GPUs vs 1",
                  notes=[f"{n} images, {tokens} output tokens per pass, max {args['max_tokens']} tokens/image",
                         f"per-rank tokens: {results[0]['rank_tokens']}",
                         "target: >= 1.8x throughput on 2 GPUs"])
    print(f"{'PASS' if single / dp >= 1.8 else 'BELOW TARGET'}: {a.world} GPUs {single / dp:.2f}x the "
          f"throughput of 1 GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
