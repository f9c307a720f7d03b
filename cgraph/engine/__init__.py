"""A minimal serving engine: pure scheduler and metadata, GPU engine loaded lazily."""

from cgraph.engine.metadata import (BLOCK_SIZE, BatchMetadata, BlockAllocator, MetadataLayout,
                                    build_metadata, num_blocks_for)
from cgraph.engine.scheduler import Request, ScheduledBatch, ScheduledSeq, Scheduler

__all__ = ["BLOCK_SIZE", "BatchMetadata", "BlockAllocator", "MetadataLayout", "build_metadata",
           "num_blocks_for", "Request", "ScheduledBatch", "ScheduledSeq", "Scheduler",
           "Engine", "EngineConfig"]


def __getattr__(name: str):
    if name in ("Engine", "EngineConfig"):
        from cgraph.engine import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'cgraph.engine' has no attribute {name!r}")
