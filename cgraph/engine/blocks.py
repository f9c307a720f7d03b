"""KV cache blocks: how many a sequence needs, and a deterministic allocator (pure)."""

from __future__ import annotations

from typing import Iterable

from cgraph.core.errors import ArgumentError, CapacityError

BLOCK_SIZE = 16


def num_blocks_for(num_tokens: int, block_size: int = BLOCK_SIZE) -> int:
    """Blocks needed to hold num_tokens KV entries."""
    return -(-num_tokens // block_size)


class BlockAllocator:
    """Hands out KV cache block ids from a fixed pool (LIFO free list, deterministic)."""

    def __init__(self, num_blocks: int, block_size: int = BLOCK_SIZE) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ArgumentError(f"BlockAllocator(num_blocks={num_blocks}, block_size={block_size}): "
                             "both must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() yields 0, 1, 2, ...
        self._used: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    def can_allocate(self, num_tokens: int) -> bool:
        return num_blocks_for(num_tokens, self.block_size) <= len(self._free)

    def allocate(self, num_tokens: int) -> tuple[int, ...]:
        """Blocks for num_tokens entries; raises RuntimeError when the pool is short."""
        n = num_blocks_for(num_tokens, self.block_size)
        if n > len(self._free):
            raise CapacityError(f"KV cache has {len(self._free)} free blocks, {n} needed for "
                               f"{num_tokens} tokens; raise num_blocks or lower the load")
        blocks = tuple(self._free.pop() for _ in range(n))
        self._used.update(blocks)
        return blocks

    def free(self, blocks: Iterable[int]) -> None:
        for b in blocks:
            if b not in self._used:
                raise ArgumentError(f"block {b} is not allocated (double free or foreign id)")
            self._used.remove(b)
            self._free.append(b)
