"""A plain, unoptimised dispatcher implementing the same rules as cgraph.core.dispatch.

Written straight from the rules (vLLM's dispatcher behaviour), independently of
cgraph.core.dispatch's precomputed rows: the keys live in sets, padding is a linear scan,
and every call builds its descriptors. It is the baseline of the dispatch benchmark and
the oracle of the differential test; it assumes valid arguments.
"""

from __future__ import annotations

from cgraph.core.config import GraphConfig
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.modes import GraphMode


class PlainDispatcher:
    """Keys per runtime mode in plain sets; :meth:`dispatch` recomputes everything per call."""

    def __init__(self, cfg: GraphConfig):
        self.cfg = cfg
        self.q = 1 + cfg.num_speculative_tokens
        self.keys: dict[GraphMode, set[BatchDescriptor]] = {
            GraphMode.PIECEWISE: set(),
            GraphMode.FULL: set(),
        }
        cases = self._lora_cases()
        mode = cfg.mode
        if mode.mixed_mode() != GraphMode.NONE:
            for size in cfg.capture_sizes:
                for has_lora, count in cases:
                    desc = self._descriptor(size, False, has_lora, count)
                    self.keys[mode.mixed_mode()].add(desc.relax_for_mixed())
        if mode.decode_mode() == GraphMode.FULL and mode.separate_routine():
            limit = self.q * cfg.max_num_seqs
            for size in cfg.capture_sizes:
                if size < self.q or size > limit:
                    continue
                if size % self.q != 0:
                    continue  # cgraph's documented choice: no decode key for such a size
                for has_lora, count in cases:
                    self.keys[GraphMode.FULL].add(self._descriptor(size, True, has_lora, count))

    def _lora_cases(self) -> list[tuple[bool, int]]:
        cfg = self.cfg
        if cfg.max_loras == 0:
            return [(False, 0)]
        if cfg.num_speculative_tokens > 0:
            cases = [(True, cfg.max_loras)]
        else:
            cases = [(True, n) for n in range(1, cfg.max_loras + 1)]
        if cfg.specialize_lora:
            cases.append((False, 0))
        return cases

    def pad(self, num_tokens: int) -> int:
        for size in self.cfg.capture_sizes:
            if size >= num_tokens:
                return size
        raise ValueError(f"{num_tokens} is above every capture size")

    def _descriptor(self, num_tokens: int, uniform: bool, has_lora: bool, count: int) -> BatchDescriptor:
        padded = self.pad(num_tokens)
        if uniform and self.cfg.mode.has_mode(GraphMode.FULL) and padded % self.q == 0:
            return BatchDescriptor(padded, padded // self.q, True, has_lora, count)
        return BatchDescriptor(padded, min(padded, self.cfg.max_num_seqs), False, has_lora, count)

    def dispatch(
        self, num_tokens: int, uniform_decode: bool = False, has_lora: bool = False,
        disable_full: bool = False, num_active_loras: int = 0,
    ) -> tuple[GraphMode, BatchDescriptor]:
        cfg = self.cfg
        if cfg.mode == GraphMode.NONE or num_tokens > cfg.max_capture_size:
            return GraphMode.NONE, BatchDescriptor(num_tokens)
        count = num_active_loras
        if cfg.num_speculative_tokens > 0 and cfg.max_loras > 0 and has_lora:
            count = cfg.max_loras
        desc = self._descriptor(num_tokens, uniform_decode, has_lora, count)
        relaxed = desc.relax_for_mixed()
        if not disable_full:
            if desc in self.keys[GraphMode.FULL]:
                return GraphMode.FULL, desc
            if relaxed in self.keys[GraphMode.FULL]:
                return GraphMode.FULL, relaxed
        if relaxed in self.keys[GraphMode.PIECEWISE]:
            return GraphMode.PIECEWISE, relaxed
        return GraphMode.NONE, BatchDescriptor(num_tokens)
