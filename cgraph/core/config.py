"""GraphConfig: what to capture (mode, batch sizes, scheduler limits, LoRA, speculation).

The config is a frozen value. Its capture sizes are resolved once, at construction:
either the explicit list (deduplicated, sorted) or the default list, and padding a
batch to a capture size is one tuple index (:attr:`GraphConfig.pad_table`, built by
:func:`cgraph.core.buckets.bucket_table`).

Limits. A config's cost grows with its largest capture size (the pad table and every
dispatch row hold one entry per token count up to it) and with its graph keys (at most
one per capture size, LoRA case and runtime mode; a dispatch row looks each size up once).
The limits below keep every step of building a config, its dispatch table and a dispatch
row well under a second (``python -m cgraph.bench.optimizers`` times the worst case) and
are checked up front, before anything is built.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs

from cgraph.core.buckets import bucket_table
from cgraph.core.checks import bool_converter, check_int, int_converter
from cgraph.core.errors import ArgumentError, ArgumentTypeError
from cgraph.core.modes import GraphMode

#: The default largest capture size is never above this many tokens.
DEFAULT_MAX_CAPTURE_SIZE_CAP = 512

#: The largest capture size (tokens) a config accepts: 2**15 = 32768, four times vLLM's
#: default scheduler budget (8192 tokens per step) and 64 times its largest default
#: capture size (512). Batches that large are launch-bound no longer, so a graph gains
#: nothing there, while the pad table and each dispatch row grow by one entry per token.
MAX_CAPTURE_SIZE = 1 << 15

#: The most LoRA adapter slots (``max_loras``) a config accepts: 64. Without speculation
#: a graph is captured per adapter count 1..max_loras for every capture size, so each slot
#: adds a full set of graphs; vLLM's default is 1 and its LoRA kernels target a few.
MAX_LORAS = 64

#: The most graph keys one runtime mode may get, bounded as ``len(capture_sizes) *
#: (max_loras + 1)`` (capture sizes times LoRA cases): 2**15 = 32768. Every key is a graph
#: to capture (milliseconds and its own memory each), so a table near this bound is
#: already far beyond what a GPU holds; building one stays a fraction of a second.
MAX_KEYS_PER_MODE = 1 << 15


def default_capture_sizes(max_size: int) -> tuple[int, ...]:
    """The default capture sizes up to ``max_size``: 1, 2, 4, then steps of 8 to 248,
    then steps of 16 from 256. Sizes above ``max_size`` are left out, so the last size
    may be below ``max_size`` (e.g. 300 gives ... 288)."""
    max_size = check_int(max_size, "max_size", 1, MAX_CAPTURE_SIZE,
                         hint=f"capture sizes are bounded by MAX_CAPTURE_SIZE={MAX_CAPTURE_SIZE}")
    sizes = [s for s in (1, 2, 4) if s <= max_size]
    sizes += range(8, min(max_size + 1, 256), 8)
    sizes += range(256, max_size + 1, 16)
    return tuple(sizes)


def _mode(value: Any) -> GraphMode:
    return GraphMode.parse(value)


def _sizes(value: Any) -> tuple[int, ...] | None:
    # Explicit sizes: positive ints, deduplicated and sorted; None asks for the defaults.
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ArgumentTypeError(
            f"GraphConfig.capture_sizes must be an iterable of positive ints or None, got "
            f"{value!r} ({type(value).__name__}); pass e.g. [1, 2, 4, 8] or None for the defaults"
        )
    # Each entry is bounded as it is read, so a huge size fails before any table is built.
    sizes = sorted({check_int(s, "GraphConfig.capture_sizes entry", 1, MAX_CAPTURE_SIZE,
                              hint=f"capture sizes are token counts, at most MAX_CAPTURE_SIZE="
                                   f"{MAX_CAPTURE_SIZE}") for s in value})
    if not sizes:
        raise ArgumentError(
            "GraphConfig.capture_sizes is empty; pass at least one size, or None for the "
            "default sizes (use mode='none' to run without graphs)"
        )
    return tuple(sizes)


@attrs.frozen
class GraphConfig:
    """Which graphs to capture.

    - ``mode``: a :class:`GraphMode` or its name.
    - ``capture_sizes``: the padded token counts to capture graphs for. None generates
      the default list: ``max = min(max_num_seqs * (1 + num_speculative_tokens) * 2, 512)``
      (or ``max_capture_size`` when given), clamped to ``max_num_batched_tokens``; sizes
      are 1, 2, 4 (those <= max), ``range(8, min(max + 1, 256), 8)`` and
      ``range(256, max + 1, 16)``. Explicit sizes must be positive ints no larger than
      ``max_num_batched_tokens`` or :data:`MAX_CAPTURE_SIZE`; they are deduplicated and
      sorted. After construction the attribute is an ascending tuple.
    - ``max_capture_size``: after construction, the largest capture size. Given with
      explicit sizes it must equal their maximum; given alone it bounds the defaults
      (at most :data:`MAX_CAPTURE_SIZE`).
    - ``max_num_seqs`` / ``max_num_batched_tokens``: the scheduler's limits per step.
    - ``num_speculative_tokens``: draft tokens per request per step (0: no speculation).
    - ``max_loras``: LoRA adapter slots; 0 means no LoRA; at most :data:`MAX_LORAS`.
    - ``specialize_lora``: with LoRA, also capture graphs for batches without adapters.

    ``len(capture_sizes) * (max_loras + 1)`` may not exceed :data:`MAX_KEYS_PER_MODE`.
    ``pad_table[n]`` is the smallest capture size >= n, for 0 <= n <= max_capture_size.
    """

    mode: GraphMode = attrs.field(converter=_mode)
    capture_sizes: tuple[int, ...] = attrs.field(default=None, converter=_sizes)
    max_capture_size: int = attrs.field(default=None)
    max_num_seqs: int = attrs.field(
        default=256, converter=int_converter("GraphConfig.max_num_seqs", 1)
    )
    max_num_batched_tokens: int = attrs.field(
        default=8192, converter=int_converter("GraphConfig.max_num_batched_tokens", 1)
    )
    num_speculative_tokens: int = attrs.field(
        default=0,
        converter=int_converter("GraphConfig.num_speculative_tokens", 0, hint="0 disables speculation"),
    )
    max_loras: int = attrs.field(
        default=0, converter=int_converter(
            "GraphConfig.max_loras", 0, MAX_LORAS,
            hint=f"0 disables LoRA; at most MAX_LORAS={MAX_LORAS} adapter slots")
    )
    specialize_lora: bool = attrs.field(
        default=True, converter=bool_converter("GraphConfig.specialize_lora")
    )
    # derived from capture_sizes, so it takes no part in equality
    pad_table: tuple[int, ...] = attrs.field(init=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        given_max = self.max_capture_size
        if given_max is not None:
            given_max = check_int(given_max, "GraphConfig.max_capture_size", 1, MAX_CAPTURE_SIZE,
                                  hint="or None to derive it from the capture sizes")
        sizes = self.capture_sizes
        if sizes is None:
            if given_max is None:
                given_max = min(
                    self.max_num_seqs * self.uniform_decode_query_len * 2,
                    DEFAULT_MAX_CAPTURE_SIZE_CAP,
                )
            sizes = default_capture_sizes(min(given_max, self.max_num_batched_tokens))
        else:
            if given_max is not None and given_max != sizes[-1]:
                raise ArgumentError(
                    f"GraphConfig.max_capture_size={given_max} disagrees with the explicit "
                    f"capture_sizes, whose largest is {sizes[-1]}; drop max_capture_size or "
                    "make it equal to the largest capture size"
                )
            if sizes[-1] > self.max_num_batched_tokens:
                too_big = [s for s in sizes if s > self.max_num_batched_tokens]
                raise ArgumentError(
                    f"GraphConfig.capture_sizes {too_big} exceed max_num_batched_tokens="
                    f"{self.max_num_batched_tokens}, so no batch could use them; drop those "
                    "sizes or raise max_num_batched_tokens"
                )
        keys = len(sizes) * (self.max_loras + 1)
        if keys > MAX_KEYS_PER_MODE:
            raise ArgumentError(
                f"GraphConfig with {len(sizes)} capture sizes and max_loras={self.max_loras} "
                f"could need {keys} graph keys per runtime mode (len(capture_sizes) * "
                f"(max_loras + 1)), above MAX_KEYS_PER_MODE={MAX_KEYS_PER_MODE}; pass fewer "
                "capture sizes (e.g. suggest_capture_sizes(histogram, max_graphs)) or fewer "
                "LoRA slots"
            )
        # attrs frozen classes set derived fields the same way internally
        object.__setattr__(self, "capture_sizes", sizes)
        object.__setattr__(self, "max_capture_size", sizes[-1])
        object.__setattr__(self, "pad_table", bucket_table(sizes))

    @property
    def uniform_decode_query_len(self) -> int:
        """Tokens per request in a uniform decode step: 1 + num_speculative_tokens."""
        return 1 + self.num_speculative_tokens

    @property
    def has_lora(self) -> bool:
        """True when LoRA is configured (max_loras > 0)."""
        return self.max_loras > 0

    @property
    def has_speculation(self) -> bool:
        """True when speculative decoding is configured (num_speculative_tokens > 0)."""
        return self.num_speculative_tokens > 0

    def pad(self, num_tokens: int) -> int:
        """The smallest capture size >= ``num_tokens`` (one tuple index).

        Raises ArgumentError (a ValueError) above :attr:`max_capture_size`: such a batch
        has no graph and runs eagerly (dispatch returns ``GraphMode.NONE`` for it).
        """
        if type(num_tokens) is int and 0 < num_tokens <= self.max_capture_size:
            return self.pad_table[num_tokens]
        num_tokens = check_int(num_tokens, "num_tokens", 1, hint="a batch has at least 1 token")
        if num_tokens > self.max_capture_size:
            raise ArgumentError(
                f"num_tokens={num_tokens} is above max_capture_size={self.max_capture_size}, "
                "so no capture size fits; such batches run without graphs (dispatch returns "
                "GraphMode.NONE), or add a larger capture size"
            )
        return self.pad_table[num_tokens]
