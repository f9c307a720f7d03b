"""One process per GPU, joined by an NCCL communicator (cupy.cuda.nccl).

:func:`launch` starts ``world`` processes with the ``spawn`` method. Rank 0 creates the
NCCL unique id and hands it to the other ranks through a queue; every rank selects GPU
``rank``, builds its communicator and calls ``worker(comm, rank, world, args)``, a
module-level function (spawn pickles it by name) returning a picklable dict. A rank that
raises reports ``{"rank", "error", "traceback"}``; the others are then stopped rather than
left waiting in a collective, and the parent returns every report it received.
NCCL_NVLS_ENABLE=0 is set for every rank (NVLink multicast stays off).
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any, Callable

from cgraph.core.errors import ArgumentTypeError
from cgraph.cuda.device import require_device

Worker = Callable[[Any, int, int, dict], dict]

_NCCL_TYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "bfloat16": "NCCL_BFLOAT16",
               "int32": "NCCL_INT32"}


def nccl_dtype(dtype: Any) -> int:
    """The NCCL data type constant for a CuPy/NumPy dtype (float16, bfloat16, float32, int32)."""
    from cupy.cuda import nccl  # noqa: PLC0415 - only with a GPU and NCCL

    try:
        return getattr(nccl, _NCCL_TYPES[str(dtype)])
    except (KeyError, AttributeError):
        raise ArgumentTypeError(
            f"no NCCL data type for {dtype}; use float16, bfloat16, float32 or int32"
        ) from None


def _rank_main(worker: Worker, rank: int, world: int, args: dict, uid_q: Any, res_q: Any) -> None:
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    try:
        cp = require_device()
        from cupy.cuda import nccl  # noqa: PLC0415

        cp.cuda.Device(rank).use()
        if rank == 0:
            uid = nccl.get_unique_id()
            for _ in range(world - 1):
                uid_q.put(uid)
        else:
            uid = uid_q.get(timeout=120)
        comm = nccl.NcclCommunicator(world, uid, rank)
        result = dict(worker(comm, rank, world, args))
        result.setdefault("rank", rank)
        res_q.put(result)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which prints it
        res_q.put({"rank": rank, "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()})


def launch(worker: Worker, world: int, args: dict, *, timeout: float = 540.0) -> list[dict]:
    """Run ``worker`` on ``world`` ranks (one process per GPU); return their reports by rank."""
    import multiprocessing as mp  # noqa: PLC0415

    os.environ["NCCL_NVLS_ENABLE"] = "0"  # inherited by the spawned processes
    ctx = mp.get_context("spawn")
    uid_q, res_q = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_rank_main, args=(worker, r, world, args, uid_q, res_q))
             for r in range(world)]
    for p in procs:
        p.start()
    results: list[dict] = []
    deadline = time.time() + timeout
    try:
        while len(results) < world and time.time() < deadline:
            try:
                results.append(res_q.get(timeout=5))
            except Exception:  # noqa: BLE001 - queue.Empty: check the workers are alive
                if any(p.exitcode not in (None, 0) for p in procs) and res_q.empty():
                    break
            if any("error" in r for r in results):
                # the other ranks may wait forever in a collective: give them a moment, then stop
                grace = time.time() + 10
                while len(results) < world and time.time() < grace:
                    try:
                        results.append(res_q.get(timeout=1))
                    except Exception:  # noqa: BLE001
                        pass
                break
    finally:
        for p in procs:
            p.join(timeout=5 if any("error" in r for r in results) else 30)
            if p.is_alive():
                p.terminate()
    return sorted(results, key=lambda r: r["rank"])
