"""Dispatch: from the facts of a batch to (runtime GraphMode, graph key).

:func:`build_dispatch_table` decides, once per config, which graph keys exist (the only
source of truth for what may be captured), and :func:`dispatch` maps a batch to one of
them. The rules are those of vLLM's CUDA graph dispatcher:

1. LoRA cases. Without LoRA: one case, (has_lora=False, num_active_loras=0). With LoRA:
   (True, n) for n in 1..max_loras, plus (False, 0) when ``specialize_lora``. With LoRA
   *and* speculative decoding only (True, max_loras) (plus (False, 0) when
   ``specialize_lora``) are captured, and a LoRA batch is looked up with max_loras
   whatever its real count.
2. Mixed keys. When the mode's mixed part is not NONE, every capture size and LoRA case
   gets a *relaxed* key (num_reqs=None, uniform=False) under the mixed part's mode.
3. Decode keys. For the pair modes (FULL_DECODE_ONLY, FULL_AND_PIECEWISE), every capture
   size x with q <= x <= q * max_num_seqs (q = uniform_decode_query_len) gets a FULL key
   (x, num_reqs=x // q, uniform=True) per LoRA case.
4. Lookup. Batches above max_capture_size, and every batch in mode NONE, get
   (NONE, BatchDescriptor(num_tokens)). Otherwise the batch is padded to a capture
   size; its descriptor has num_reqs = padded // q and uniform=True for a uniform
   decode batch when the mode has FULL graphs, else num_reqs = min(padded,
   max_num_seqs) and uniform=False. The first hit wins among: the exact descriptor in
   FULL, its relaxed form in FULL (both skipped when ``disable_full``), the relaxed form
   in PIECEWISE. No hit gives (NONE, BatchDescriptor(num_tokens)).

One case vLLM leaves to an assertion is defined here: when q does not divide a capture
size (possible only with speculative decoding and sizes that are not multiples of q),
that size gets no decode key, and a uniform decode batch padded to it is treated as a
mixed batch (relaxed key: PIECEWISE or FULL mixed graph if there is one, else NONE).

Speed: dispatch answers from rows precomputed per (uniform_decode, has_lora,
num_active_loras, disable_full), indexed by num_tokens, so a call costs a few type
checks, one dict lookup and one tuple index. A row is built on first use and holds
max_capture_size + 1 references to shared results; at most 8 * (max_loras + 1) rows exist.
Answers for batches above max_capture_size but within max_num_batched_tokens are
cached per num_tokens as they are first seen (NONE answers do not depend on the flags).
"""

from __future__ import annotations

from typing import Any

import attrs

from cgraph.core.checks import check_bool, check_instance, check_int
from cgraph.core.config import GraphConfig
from cgraph.core.errors import ArgumentError
from cgraph.core.descriptors import BatchDescriptor, eager_descriptor
from cgraph.core.modes import GraphMode

Dispatch = tuple[GraphMode, BatchDescriptor]


def lora_cases(cfg: GraphConfig) -> tuple[tuple[bool, int], ...]:
    """The (has_lora, num_active_loras) pairs graphs are captured for (rule 1)."""
    if cfg.max_loras == 0:
        return ((False, 0),)
    if cfg.has_speculation:
        cases = [(True, cfg.max_loras)]
    else:
        cases = [(True, n) for n in range(1, cfg.max_loras + 1)]
    if cfg.specialize_lora:
        cases.append((False, 0))
    return tuple(cases)


def padded_descriptor(
    cfg: GraphConfig, padded: int, uniform_decode: bool, has_lora: bool, num_active_loras: int
) -> BatchDescriptor:
    """The descriptor of a batch already padded to ``padded`` tokens (rule 4)."""
    q = cfg.uniform_decode_query_len
    if uniform_decode and cfg.mode.has_full_graphs() and padded % q == 0:
        return BatchDescriptor(padded, padded // q, True, has_lora, num_active_loras)
    return BatchDescriptor(padded, min(padded, cfg.max_num_seqs), False, has_lora, num_active_loras)


@attrs.frozen
class DispatchTable:
    """The graph keys of one config, per runtime mode, and the precomputed dispatch rows.

    Build it with :func:`build_dispatch_table`. ``keys(GraphMode.FULL)`` and
    ``keys(GraphMode.PIECEWISE)`` are the descriptors to capture. The rows are an
    internal cache: they never change an answer, only its cost.
    """

    config: GraphConfig
    full_keys: frozenset[BatchDescriptor]
    piecewise_keys: frozenset[BatchDescriptor]
    # (uniform_decode, has_lora, num_active_loras, disable_full) -> row indexed by num_tokens
    _rows: dict[tuple[bool, bool, int, bool], tuple[Dispatch, ...]] = attrs.field(
        init=False, factory=dict, eq=False, hash=False, repr=False
    )
    # the stored key object for each key, so rows share them
    _canon: dict[BatchDescriptor, BatchDescriptor] = attrs.field(
        init=False, factory=dict, eq=False, hash=False, repr=False
    )
    # _eager[n] == (NONE, BatchDescriptor(n)) for max_capture_size < n <= max_num_batched_tokens
    _eager: dict[int, Dispatch] = attrs.field(init=False, factory=dict, eq=False, hash=False, repr=False)
    # _misses[n] == (NONE, BatchDescriptor(n)) for 1 <= n <= max_capture_size, built on first use
    _misses: list[tuple[Dispatch, ...]] = attrs.field(
        init=False, factory=list, eq=False, hash=False, repr=False
    )

    @property
    def mode(self) -> GraphMode:
        """The configured mode (``config.mode``)."""
        return self.config.mode

    def cache_info(self) -> dict[str, int]:
        """Precomputed dispatch rows built so far, and their bytes (the rows' tuples only)."""
        import sys  # noqa: PLC0415 - only this introspection needs it

        return {"rows": len(self._rows), "bytes": sum(sys.getsizeof(r) for r in self._rows.values())}

    def keys(self, mode: GraphMode | str) -> frozenset[BatchDescriptor]:
        """The graph keys of runtime mode FULL or PIECEWISE."""
        mode = GraphMode.parse(mode)
        if mode is GraphMode.FULL:
            return self.full_keys
        if mode is GraphMode.PIECEWISE:
            return self.piecewise_keys
        raise ArgumentError(
            f"keys exist only for the runtime modes FULL and PIECEWISE, got {mode.name}; "
            "ask for GraphMode.FULL or GraphMode.PIECEWISE"
        )

    def _miss_results(self) -> tuple[Dispatch, ...]:
        if not self._misses:
            self._misses.append(
                (None,) + tuple(
                    (GraphMode.NONE, BatchDescriptor(n))
                    for n in range(1, self.config.max_capture_size + 1)
                )
            )
        return self._misses[0]

    def _lookup(
        self, padded: int, uniform_decode: bool, has_lora: bool, num_active_loras: int,
        disable_full: bool,
    ) -> Dispatch | None:
        """The graph hit for a padded batch, or None (rule 4 without the NONE cases)."""
        cfg = self.config
        if cfg.max_loras and cfg.has_speculation and has_lora:
            # Only max_loras graphs exist with speculation, so every LoRA batch uses them.
            num_active_loras = cfg.max_loras
        desc = padded_descriptor(cfg, padded, uniform_decode, has_lora, num_active_loras)
        relaxed = desc.relax_for_mixed()
        if not disable_full:
            if desc in self.full_keys:
                return GraphMode.FULL, desc
            if relaxed in self.full_keys:
                return GraphMode.FULL, relaxed
        if relaxed in self.piecewise_keys:
            return GraphMode.PIECEWISE, relaxed
        return None

    def _row(
        self, uniform_decode: bool, has_lora: bool, num_active_loras: int, disable_full: bool
    ) -> tuple[Dispatch, ...]:
        """The answers for num_tokens 1..max_capture_size of one flag combination."""
        misses = self._miss_results()
        if self.config.mode is GraphMode.NONE:
            return misses
        cfg = self.config
        # One answer per capture size, shared by every num_tokens that pads to it.
        hits = {}
        for size in cfg.capture_sizes:
            hit = self._lookup(size, uniform_decode, has_lora, num_active_loras, disable_full)
            if hit is not None:
                hit = (hit[0], _canonical(self, hit))
            hits[size] = hit
        pad = cfg.pad_table
        return (None,) + tuple(
            hits[pad[n]] or misses[n] for n in range(1, cfg.max_capture_size + 1)
        )


def _canonical(table: DispatchTable, hit: Dispatch) -> BatchDescriptor:
    # Return the key object stored in the table so identical answers share one object.
    if not table._canon:
        table._canon.update((k, k) for k in table.full_keys | table.piecewise_keys)
    return table._canon[hit[1]]


def build_dispatch_table(cfg: GraphConfig) -> DispatchTable:
    """The graph keys of ``cfg`` (rules 1-3), ready for :func:`dispatch`."""
    check_instance(cfg, GraphConfig, "build_dispatch_table's cfg", hint="pass e.g. GraphConfig('full')")
    keys: dict[GraphMode, set[BatchDescriptor]] = {GraphMode.FULL: set(), GraphMode.PIECEWISE: set()}
    cases = lora_cases(cfg)
    mixed = cfg.mode.mixed_mode()
    if mixed is not GraphMode.NONE:
        for size in cfg.capture_sizes:
            for has_lora, n_loras in cases:
                keys[mixed].add(
                    padded_descriptor(cfg, size, False, has_lora, n_loras).relax_for_mixed()
                )
    if cfg.mode.decode_mode() is GraphMode.FULL and cfg.mode.separate_routine():
        q = cfg.uniform_decode_query_len
        for size in cfg.capture_sizes:
            # Sizes q does not divide cannot hold whole decode requests: no decode key.
            if q <= size <= q * cfg.max_num_seqs and size % q == 0:
                for has_lora, n_loras in cases:
                    keys[GraphMode.FULL].add(padded_descriptor(cfg, size, True, has_lora, n_loras))
    return DispatchTable(cfg, frozenset(keys[GraphMode.FULL]), frozenset(keys[GraphMode.PIECEWISE]))


def dispatch(
    table: DispatchTable,
    num_tokens: int,
    uniform_decode: bool = False,
    has_lora: bool = False,
    disable_full: bool = False,
    num_active_loras: int = 0,
) -> Dispatch:
    """The runtime mode and graph key for a batch of ``num_tokens`` tokens.

    - ``uniform_decode``: every request in the batch has uniform_decode_query_len tokens.
    - ``has_lora`` / ``num_active_loras``: LoRA adapters are active, and how many distinct.
    - ``disable_full``: never answer FULL (e.g. when the batch needs cascade attention).

    Returns (FULL or PIECEWISE, a key of that mode) or (NONE, BatchDescriptor(num_tokens));
    the module docstring gives the rules. Raises ArgumentTypeError/ArgumentError (a
    TypeError/ValueError) for a non-int, bool or non-positive num_tokens, non-bool
    flags, or a negative num_active_loras.
    """
    # Fast path: exact built-in types (bool is not int here) and a row already built.
    if (
        type(num_tokens) is int
        and num_tokens > 0
        and type(uniform_decode) is bool
        and type(has_lora) is bool
        and type(disable_full) is bool
        and type(num_active_loras) is int
    ):
        try:
            row = table._rows[(uniform_decode, has_lora, num_active_loras, disable_full)]
            if num_tokens < len(row):
                return row[num_tokens]
            return table._eager[num_tokens]  # above max_capture_size, seen before
        except (KeyError, AttributeError):
            pass
    return _dispatch_checked(table, num_tokens, uniform_decode, has_lora, disable_full, num_active_loras)


def _dispatch_checked(
    table: Any, num_tokens: Any, uniform_decode: Any, has_lora: Any, disable_full: Any,
    num_active_loras: Any,
) -> Dispatch:
    """Dispatch's slow path: check the arguments, build the row if it is missing."""
    check_instance(table, DispatchTable, "dispatch's table",
                   hint="build one with build_dispatch_table(GraphConfig(...))")
    num_tokens = check_int(num_tokens, "num_tokens", 1, hint="a batch has at least 1 token")
    uniform_decode = check_bool(uniform_decode, "uniform_decode")
    has_lora = check_bool(has_lora, "has_lora")
    disable_full = check_bool(disable_full, "disable_full")
    num_active_loras = check_int(num_active_loras, "num_active_loras", 0,
                                 hint="0 when no adapter is active")
    cfg = table.config
    if num_tokens > cfg.max_capture_size:
        answer = (GraphMode.NONE, eager_descriptor(num_tokens))
        if num_tokens <= cfg.max_num_batched_tokens:
            # Bounded by the scheduler's budget; larger batches are rare and not cached.
            table._eager[num_tokens] = answer
        return answer
    key = (uniform_decode, has_lora, num_active_loras, disable_full)
    if num_active_loras > cfg.max_loras:
        # Unbounded values are answered without caching so the rows stay bounded.
        if cfg.mode is not GraphMode.NONE:
            hit = table._lookup(cfg.pad(num_tokens), *key)
            if hit is not None:
                return hit
        return GraphMode.NONE, BatchDescriptor(num_tokens)
    row = table._rows.get(key)
    if row is None:
        row = table._rows.setdefault(key, table._row(*key))
    return row[num_tokens]


def capture_descriptors(table: DispatchTable) -> dict[GraphMode, tuple[BatchDescriptor, ...]]:
    """The keys to capture per runtime mode, largest batch first (the capture order).

    Capturing the largest graph first lets smaller graphs reuse its pool memory. Keys of
    one size are ordered uniform first, then by LoRA count, most adapters first.
    """
    check_instance(table, DispatchTable, "capture_descriptors' table",
                   hint="build one with build_dispatch_table(GraphConfig(...))")

    def order(d: BatchDescriptor) -> tuple[int, bool, bool, int]:
        return (d.num_tokens, d.uniform, d.has_lora, d.num_active_loras)

    return {
        GraphMode.FULL: tuple(sorted(table.full_keys, key=order, reverse=True)),
        GraphMode.PIECEWISE: tuple(sorted(table.piecewise_keys, key=order, reverse=True)),
    }
