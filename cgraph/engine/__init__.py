"""A minimal serving engine: pure scheduler and metadata, GPU engine loaded lazily."""

from cgraph.engine.blocks import BLOCK_SIZE, BlockAllocator, num_blocks_for
from cgraph.engine.metadata import BatchMetadata, MetadataLayout, build_metadata
from cgraph.engine.scheduler import Request, ScheduledBatch, ScheduledSeq, Scheduler

__all__ = ["BLOCK_SIZE", "BatchMetadata", "BlockAllocator", "MetadataLayout", "build_metadata",
           "num_blocks_for", "Request", "ScheduledBatch", "ScheduledSeq", "Scheduler",
           "Engine"]


def __getattr__(name: str):
    if name == "Engine":
        from cgraph.engine import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'cgraph.engine' has no attribute {name!r}")
