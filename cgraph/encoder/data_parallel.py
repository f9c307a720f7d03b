"""Data-parallel encoding over several GPUs with NCCL (cupy.cuda.nccl), one process per GPU.

Every rank receives the same image list and computes the same ShardPlan (load_balance by
patch count), encodes its own images with its local EncoderGraphManager, packs its outputs
into one block padded to the largest rank's token count, all-gathers the blocks and
unpacks every image's rows in input order. All ranks end with all outputs.

Processes are started with cgraph.cuda.ranks.launch; the check and the benchmark are
`python -m cgraph.bench.encoder_dp --check|--bench [--world 2]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cgraph.core.errors import ArgumentError
from cgraph.cuda.device import require_device
from cgraph.cuda.ranks import nccl_dtype
from cgraph.core.sharding import ShardPlan, pack_rank_outputs, shard_items, unpack_gathered


class DataParallelEncoder:
    """Shards images over ranks, encodes locally (graphs), all-gathers, restores input order.

    encode_local: callable(list of images) -> list of [tokens, out_dim] arrays (for example
    EncoderGraphManager.execute). comm: a cupy.cuda.nccl.NcclCommunicator for this rank.
    """

    def __init__(self, model: Any, encode_local: Any, comm: Any, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ArgumentError(f"rank {rank} is outside 0..{world_size - 1}; pass 0 <= rank < world_size")
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
        cp = self._cp
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
                            nccl_dtype(block.dtype), stream.ptr)
        return unpack_gathered(gathered, plan)  # views of a fresh buffer: nothing overwrites them

    def barrier(self) -> None:
        """Wait until every rank reaches this point (an all-reduce of one int)."""
        cp = self._cp
        x = cp.ones(1, cp.int32)
        stream = cp.cuda.get_current_stream()
        self.comm.allReduce(x.data.ptr, x.data.ptr, 1, self._nccl.NCCL_INT32, self._nccl.NCCL_SUM, stream.ptr)
        stream.synchronize()
