"""Continuous-batching scheduler (pure Python, no CuPy).

Each step forms one batch under two budgets, `max_num_seqs` sequences and
`max_num_batched_tokens` tokens:
1. every running request contributes one decode token (its last sampled token);
2. waiting requests are admitted first-come-first-served while a sequence slot, the
   token budget for the whole prompt (a prompt is prefilled in one step) and KV blocks
   for its whole lifetime (prompt + max_new_tokens - 1 entries) are available; the first
   one that does not fit stops admission, so no request is starved by later ones.
A batch whose every sequence has a one-token query is a uniform decode batch (the FULL
graph path); any batch with a longer prefill is mixed. KV blocks are reserved at
admission, so a running request never waits for memory and nothing is preempted.

Tokens may come back late. Scheduling depends only on counts (a request runs for
max_new_tokens) and on the stop tokens recorded so far, so `update(batch)` advances the
counts without the sampled values and `record(batch, tokens)` stores them later, in step
order. A request stops when a token of its `stop_token_ids` is recorded (the stop token
is its last output token): it leaves the running set then, its blocks are freed, and any
token it sampled in a step scheduled before the stop was known is discarded. Its own
tokens do not depend on those extra steps (each row's computation depends only on its
own sequence), and the blocks it frees are rewritten only by steps enqueued later. Every decode sequence names
`source_row`, the row of its request in the previous step, whose sampled token is its
input: the engine feeds it on the device, so the host never waits for a token to go on.
A decode sequence's `token_ids` holds that token when it is already recorded, else -1.
"""

from __future__ import annotations

from collections import deque
from typing import Hashable, NamedTuple, Sequence

import attrs

from cgraph.engine.blocks import BlockAllocator
from cgraph.core.errors import ArgumentError, ArgumentTypeError, StateError
from cgraph.core.sampling import GREEDY, SamplingParams


def _token_tuple(value: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(t) for t in value)


def _sampling(value: SamplingParams) -> SamplingParams:
    if not isinstance(value, SamplingParams):
        raise ArgumentTypeError(f"sampling must be a cgraph.SamplingParams, got {type(value).__name__} "
                                f"{value!r}; pass e.g. SamplingParams(temperature=0.8, top_p=0.95, seed=1)")
    return value


@attrs.frozen
class Request:
    """A generation request: prompt token ids, how many tokens to generate at most, the
    token ids that end it early (an end-of-sequence id; the stop token is kept as the
    request's last output token), and how it picks tokens (greedy by default; see
    cgraph.core.sampling: a sampled token depends only on the seed and its position)."""

    request_id: Hashable
    prompt: tuple[int, ...] = attrs.field(converter=_token_tuple)
    max_new_tokens: int = 16
    stop_token_ids: tuple[int, ...] = attrs.field(default=(), converter=_token_tuple)
    sampling: SamplingParams = attrs.field(default=GREEDY, converter=_sampling)

    def __attrs_post_init__(self) -> None:
        if not self.prompt:
            raise ArgumentError(f"request {self.request_id!r}: the prompt is empty; give at least one token")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise ArgumentError(f"request {self.request_id!r}: max_new_tokens={self.max_new_tokens!r}, "
                             "expected an int >= 1")
        if min(self.prompt) < 0:
            raise ArgumentError(f"request {self.request_id!r}: prompt has negative token ids")
        if self.stop_token_ids and min(self.stop_token_ids) < 0:
            raise ArgumentError(f"request {self.request_id!r}: stop_token_ids={self.stop_token_ids} has negative "
                                "ids; pass vocabulary ids (e.g. the tokenizer's eos_token_id)")

    @property
    def kv_tokens(self) -> int:
        """KV entries the request ever writes (the last sampled token is never fed back)."""
        return len(self.prompt) + self.max_new_tokens - 1


class ScheduledSeq(NamedTuple):
    """One sequence's share of a step: query tokens starting at position `start`.

    source_row: for a decode, the request's row in the previous step (its sampled token is
    this step's input); -1 for a prefill, whose token ids are all given.

    An immutable value like the attrs classes here, but a NamedTuple: the scheduler builds
    one per running request every step, on the host path the overlapped engine must keep
    shorter than a GPU step, and a NamedTuple is built in well under half the time of a
    frozen attrs instance.
    """

    request_id: Hashable
    token_ids: tuple[int, ...]
    start: int
    block_ids: tuple[int, ...]
    source_row: int = -1
    stop_token_ids: tuple[int, ...] = ()
    sampling: SamplingParams = GREEDY

    @property
    def query_len(self) -> int:
        return len(self.token_ids)


@attrs.frozen
class ScheduledBatch:
    """The sequences of one step, decodes first, then prefills.

    num_tokens and max_query_len are counted once, at construction, from seqs (the
    scheduler, which has counted them already, passes them in): the engine's host loop asks
    for them several times a step, and a batch has up to max_num_seqs sequences."""

    seqs: tuple[ScheduledSeq, ...]
    num_decodes: int
    num_tokens: int = attrs.field(kw_only=True, eq=False, repr=False, default=attrs.Factory(
        lambda self: sum(len(s.token_ids) for s in self.seqs), takes_self=True))
    max_query_len: int = attrs.field(kw_only=True, eq=False, repr=False, default=attrs.Factory(
        lambda self: max((len(s.token_ids) for s in self.seqs), default=0), takes_self=True))

    @property
    def num_prefills(self) -> int:
        return len(self.seqs) - self.num_decodes

    @property
    def uniform_decode(self) -> bool:
        """Every sequence has a one-token query (token i belongs to sequence i)."""
        return self.max_query_len == 1


@attrs.define
class _Running:
    request: Request
    block_ids: tuple[int, ...]
    num_computed: int = 0
    generated: int = 0  # tokens sampled so far (their values may not be recorded yet)
    row: int = -1  # row in the last scheduled batch
    output: list[int] = attrs.Factory(list)
    stopped: bool = False  # a stop token was recorded: the output is final

    def last_token(self) -> int:
        return self.output[-1] if self.output and len(self.output) == self.generated else -1


class Scheduler:
    """Forms batches step by step; `update` advances them, `record` stores sampled tokens."""

    def __init__(self, *, max_num_seqs: int, max_num_batched_tokens: int,
                 allocator: BlockAllocator) -> None:
        if max_num_seqs < 1:
            raise ArgumentError(f"max_num_seqs={max_num_seqs}: expected >= 1")
        if max_num_batched_tokens < max_num_seqs:
            raise ArgumentError(f"max_num_batched_tokens={max_num_batched_tokens} < max_num_seqs="
                             f"{max_num_seqs}: every running sequence needs a token per step; "
                             "raise max_num_batched_tokens")
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.allocator = allocator
        self._waiting: deque[Request] = deque()
        self._running: list[_Running] = []
        self._ids: set[Hashable] = set()
        self._done: dict[Hashable, _Running] = {}
        self._recording: dict[Hashable, _Running] = {}  # every admitted request, by id
        self._pending: ScheduledBatch | None = None

    def add(self, request: Request) -> None:
        """Queue a request; raises ValueError if it could never be scheduled."""
        if request.request_id in self._ids:
            raise ArgumentError(f"request id {request.request_id!r} is already in use")
        if len(request.prompt) > self.max_num_batched_tokens:
            raise ArgumentError(f"request {request.request_id!r}: prompt of {len(request.prompt)} tokens "
                             f"exceeds max_num_batched_tokens={self.max_num_batched_tokens} (prompts "
                             "are prefilled in one step); shorten it or raise the budget")
        need = -(-request.kv_tokens // self.allocator.block_size)
        if need > self.allocator.num_blocks:
            raise ArgumentError(f"request {request.request_id!r} needs {need} KV blocks, the cache has "
                             f"{self.allocator.num_blocks}; enlarge the KV cache")
        self._ids.add(request.request_id)
        self._waiting.append(request)

    @property
    def finished(self) -> dict[Hashable, tuple[int, ...]]:
        """Generated tokens of every finished request whose tokens are all recorded (up to
        and including its stop token, if one was sampled)."""
        return {rid: tuple(r.output) for rid, r in self._done.items()
                if r.stopped or len(r.output) == r.request.max_new_tokens}

    @property
    def has_work(self) -> bool:
        return bool(self._waiting or self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    def schedule(self) -> ScheduledBatch | None:
        """The next step's batch, or None when no request is left."""
        if self._pending is not None:
            raise StateError("schedule() called twice without update(); feed back the sampled "
                               "tokens of the previous batch first")
        # one decode per running request: this loop runs for every sequence of every step, on
        # the host path the overlapped engine hides behind the GPU, so it stays plain
        seqs: list[ScheduledSeq] = []
        append = seqs.append
        for row, r in enumerate(self._running):  # running order is the batch's row order
            out, req = r.output, r.request
            token = out[-1] if out and len(out) == r.generated else -1
            append(ScheduledSeq(req.request_id, (token,), r.num_computed, r.block_ids, r.row, req.stop_token_ids,
                                req.sampling))
            r.row = row
        budget = self.max_num_batched_tokens - len(seqs)
        num_decodes = len(seqs)
        num_tokens, max_query_len = num_decodes, 1 if num_decodes else 0
        while self._waiting and len(self._running) < self.max_num_seqs:
            req = self._waiting[0]
            if len(req.prompt) > budget or not self.allocator.can_allocate(req.kv_tokens):
                break
            self._waiting.popleft()
            run = _Running(req, self.allocator.allocate(req.kv_tokens))
            self._running.append(run)
            self._recording[req.request_id] = run
            run.row = len(seqs)
            seqs.append(ScheduledSeq(req.request_id, req.prompt, 0, run.block_ids,
                                     stop_token_ids=req.stop_token_ids, sampling=req.sampling))
            budget -= len(req.prompt)
            num_tokens += len(req.prompt)
            max_query_len = max(max_query_len, len(req.prompt))
        if not seqs:
            return None
        self._pending = ScheduledBatch(tuple(seqs), num_decodes, num_tokens=num_tokens, max_query_len=max_query_len)
        return self._pending

    def update(self, batch: ScheduledBatch, sampled: Sequence[int] | None = None) -> list[Hashable]:
        """Advance every sequence of the last scheduled batch by one sampled token; return
        the ids that finished (their KV blocks are free again). With `sampled`, also
        record the token values (see record())."""
        if batch is not self._pending:
            raise StateError("update() got a batch that is not the last scheduled one; call "
                             "schedule() and update() in turn")
        if sampled is not None and len(sampled) < len(batch.seqs):
            raise ArgumentError(f"{len(sampled)} sampled tokens for {len(batch.seqs)} sequences; "
                                "pass one token per scheduled sequence")
        self._pending = None
        done: list[Hashable] = []
        recording = self._recording
        for seq in batch.seqs:
            run = recording[seq.request_id]
            if run.stopped:  # its stop token was recorded after this batch was scheduled
                continue
            run.num_computed += len(seq.token_ids)
            run.generated += 1
            if run.generated >= run.request.max_new_tokens:
                done.append(seq.request_id)
                self.allocator.free(run.block_ids)
                self._done[seq.request_id] = run
        if done:
            gone = set(done)
            self._running = [r for r in self._running if r.request.request_id not in gone]
        if sampled is not None:
            self.record(batch, sampled)
        return done

    def record(self, batch: ScheduledBatch, sampled: Sequence[int]) -> None:
        """Store the token each sequence of an updated batch sampled. Batches must be
        recorded in the order they were scheduled. A stop token ends its request (see the
        module docstring); tokens recorded for a stopped request are discarded."""
        if len(sampled) < len(batch.seqs):
            raise ArgumentError(f"{len(sampled)} sampled tokens for {len(batch.seqs)} sequences; "
                                "pass one token per scheduled sequence")
        stopped = []
        recording = self._recording
        for seq, tok in zip(batch.seqs, sampled):
            run = recording[seq.request_id]
            if run.stopped:
                continue
            out = run.output
            if len(out) >= run.generated:
                raise StateError(f"request {seq.request_id!r}: more tokens recorded than sampled; "
                                 "record each batch once, after update()")
            tok = int(tok)
            out.append(tok)
            stop = run.request.stop_token_ids
            if stop and tok in stop:
                run.stopped = True
                if run.request.request_id not in self._done:  # still running: it ends now
                    self.allocator.free(run.block_ids)
                    self._done[run.request.request_id] = run
                    stopped.append(run)
        if stopped:
            self._running = [r for r in self._running if not r.stopped]
