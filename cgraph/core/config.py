"""GraphConfig: what to capture (mode, batch sizes, scheduler limits, LoRA, speculation).

The config is a frozen value. Its capture sizes are resolved once, at construction:
either the explicit list (deduplicated, sorted) or the default list, and padding a
batch to a capture size is one tuple index.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs

from cgraph.core.checks import bool_converter, check_int, int_converter
from cgraph.core.modes import GraphMode

#: The default largest capture size is never above this many tokens.
DEFAULT_MAX_CAPTURE_SIZE_CAP = 512


def default_capture_sizes(max_size: int) -> tuple[int, ...]:
    """The default capture sizes up to ``max_size``: 1, 2, 4, then steps of 8 to 248,
    then steps of 16 from 256. Sizes above ``max_size`` are left out, so the last size
    may be below ``max_size`` (e.g. 300 gives ... 288)."""
    max_size = check_int(max_size, "max_size", 1)
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
        raise TypeError(
            f"GraphConfig.capture_sizes must be an iterable of positive ints or None, got "
            f"{value!r} ({type(value).__name__}); pass e.g. [1, 2, 4, 8] or None for the defaults"
        )
    sizes = sorted({check_int(s, "GraphConfig.capture_sizes entry", 1,
                              hint="capture sizes are token counts") for s in value})
    if not sizes:
        raise ValueError(
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
      ``max_num_batched_tokens``; they are deduplicated and sorted. After construction
      the attribute is an ascending tuple.
    - ``max_capture_size``: after construction, the largest capture size. Given with
      explicit sizes it must equal their maximum; given alone it bounds the defaults.
    - ``max_num_seqs`` / ``max_num_batched_tokens``: the scheduler's limits per step.
    - ``num_speculative_tokens``: draft tokens per request per step (0: no speculation).
    - ``max_loras``: LoRA adapter slots; 0 means no LoRA.
    - ``specialize_lora``: with LoRA, also capture graphs for batches without adapters.
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
        default=0, converter=int_converter("GraphConfig.max_loras", 0, hint="0 disables LoRA")
    )
    specialize_lora: bool = attrs.field(
        default=True, converter=bool_converter("GraphConfig.specialize_lora")
    )
    # pad lookup: _pad_table[n] is the smallest capture size >= n, for 1 <= n <= max.
    _pad_table: tuple[int, ...] = attrs.field(init=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        given_max = self.max_capture_size
        if given_max is not None:
            given_max = check_int(given_max, "GraphConfig.max_capture_size", 1,
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
                raise ValueError(
                    f"GraphConfig.max_capture_size={given_max} disagrees with the explicit "
                    f"capture_sizes, whose largest is {sizes[-1]}; drop max_capture_size or "
                    "make it equal to the largest capture size"
                )
            if sizes[-1] > self.max_num_batched_tokens:
                too_big = [s for s in sizes if s > self.max_num_batched_tokens]
                raise ValueError(
                    f"GraphConfig.capture_sizes {too_big} exceed max_num_batched_tokens="
                    f"{self.max_num_batched_tokens}, so no batch could use them; drop those "
                    "sizes or raise max_num_batched_tokens"
                )
        object.__setattr__(self, "capture_sizes", sizes)
        object.__setattr__(self, "max_capture_size", sizes[-1])
        table = [0] * (sizes[-1] + 1)
        lo = 1
        for size in sizes:
            table[lo : size + 1] = [size] * (size + 1 - lo)
            lo = size + 1
        object.__setattr__(self, "_pad_table", tuple(table))

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

        Raises ValueError above :attr:`max_capture_size`: such a batch has no graph and
        runs eagerly (dispatch returns ``GraphMode.NONE`` for it).
        """
        if type(num_tokens) is int and 0 < num_tokens <= self.max_capture_size:
            return self._pad_table[num_tokens]
        num_tokens = check_int(num_tokens, "num_tokens", 1, hint="a batch has at least 1 token")
        if num_tokens > self.max_capture_size:
            raise ValueError(
                f"num_tokens={num_tokens} is above max_capture_size={self.max_capture_size}, "
                "so no capture size fits; such batches run without graphs (dispatch returns "
                "GraphMode.NONE), or add a larger capture size"
            )
        return self._pad_table[num_tokens]
