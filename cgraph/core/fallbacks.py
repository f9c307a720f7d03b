"""Why a step ran eagerly when the config wanted a graph, and telling the user once.

A batch dispatched to NONE is a *fallback* when the configured mode has graphs for that
kind of batch (its decode part for a uniform decode batch, its mixed part otherwise):
FULL_DECODE_ONLY running a prefill eagerly is the design, not a fallback.
:func:`fallback_cause` names the cause in words a user can act on; a :class:`FallbackLog`
counts fallbacks per cause and warns through stdlib logging the first time each cause
occurs (with the count so far when asked for a summary).
"""

from __future__ import annotations

import logging
from collections import Counter

from cgraph.core.config import GraphConfig
from cgraph.core.modes import GraphMode

logger = logging.getLogger("cgraph")

ABOVE_LARGEST = "batch above the largest capture size"
NO_MATCHING_KEY = "LoRA or speculative-decoding facts that match no captured key"
REFUSED = "refused by the graph pool's memory limit"
NOT_CAPTURED_YET = "waiting for its lazy capture (fewer uses than LazyCapture.after_uses)"

_ADVICE = {
    ABOVE_LARGEST: "add a larger capture size (GraphConfig.capture_sizes) or lower the batch budget",
    NO_MATCHING_KEY: "check max_loras / specialize_lora / num_speculative_tokens against the batches",
    REFUSED: "raise the memory budget or capture fewer sizes",
    NOT_CAPTURED_YET: "expected while serving warms up; lower after_uses to capture sooner",
}


def wants_graph(cfg: GraphConfig, uniform_decode: bool) -> bool:
    """True when the configured mode has graphs for this kind of batch."""
    part = cfg.mode.decode_mode() if uniform_decode else cfg.mode.mixed_mode()
    return part is not GraphMode.NONE


def fallback_cause(cfg: GraphConfig, num_tokens: int, uniform_decode: bool) -> str | None:
    """The cause of an eager step the config wanted a graph for, or None (not a fallback)."""
    if not wants_graph(cfg, uniform_decode):
        return None
    if num_tokens > cfg.max_capture_size:
        return ABOVE_LARGEST
    return NO_MATCHING_KEY


class FallbackLog:
    """Fallback counts per cause; the first of each cause is logged as a warning."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.counts: Counter[str] = Counter()

    def note(self, cause: str) -> None:
        """Count one fallback; warn if this cause is new."""
        self.counts[cause] += 1
        if self.counts[cause] == 1:
            logger.warning("%s: a step ran eagerly (%s); %s. Counted in the summary.",
                           self.owner, cause, _ADVICE.get(cause, "see the summary"))

    def report(self) -> None:
        """One warning per cause with its count so far (call at the end of a run)."""
        for cause, n in sorted(self.counts.items()):
            logger.warning("%s: %d step(s) ran eagerly so far (%s)", self.owner, n, cause)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)
