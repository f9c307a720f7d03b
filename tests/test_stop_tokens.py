"""Stop tokens (end-of-sequence ids): the scheduler ends a request at its first stop token,
also when tokens are recorded late (the overlapped loop), and the multi-step loop's
per-launch parameters and bookkeeping contract (pure; no CuPy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cgraph.engine import BlockAllocator, Request, Scheduler
from cgraph.engine.multistep import MAX_STOP_IDS, loop_params_size, pack_loop_params
from cgraph.kernels import reference as R


def _stream(rid: int, k: int, vocab: int) -> int:
    """The k-th token request `rid` samples: a fixed function of the request and k, as a
    batch-invariant model's tokens are (they do not depend on the other rows)."""
    return (rid * 7919 + k * 104729 + (rid * k) % 13) % vocab


def _expected(req: Request, vocab: int) -> tuple[int, ...]:
    out = []
    for k in range(req.max_new_tokens):
        out.append(_stream(req.request_id, k, vocab))
        if out[-1] in req.stop_token_ids:
            break
    return tuple(out)


def _serve(sched: Scheduler, reqs: list[Request], lag: int, vocab: int, max_steps: int = 100_000) -> list:
    """Run to the end, recording each batch's tokens `lag` steps after it was scheduled
    (0: at once, as the synchronous loop; more: as the overlapped loop's ring, which
    records the oldest launch between scheduling a batch and updating it)."""
    prompt_len = {r.request_id: len(r.prompt) for r in reqs}
    pending, batches = [], []
    for _ in range(max_steps):
        batch = sched.schedule()
        if batch is None:
            if not pending:
                return batches
            sched.record(*pending.pop(0))
            continue
        while lag and len(pending) >= lag:
            sched.record(*pending.pop(0))
        # the token a row samples is its request's next one
        toks = [_stream(q.request_id, q.start + q.query_len - prompt_len[q.request_id], vocab) for q in batch.seqs]
        sched.update(batch)
        pending.append((batch, toks))
        batches.append(batch)
        if not lag:
            sched.record(*pending.pop(0))
    raise AssertionError("the scheduler did not finish")


def _requests(rng, n: int, vocab: int, stop_share: float) -> list[Request]:
    reqs = []
    for i in range(n):
        max_new = int(rng.integers(1, 30))
        prompt = rng.integers(0, vocab, size=int(rng.integers(1, 40))).tolist()
        stops: tuple[int, ...] = ()
        if rng.random() < stop_share:
            # a stop id the request samples somewhere inside its run (or one it never does)
            k = int(rng.integers(0, max_new + 3))
            stops = (_stream(i, k, vocab), int(rng.integers(0, vocab)))
        reqs.append(Request(i, prompt, max_new_tokens=max_new, stop_token_ids=stops))
    return reqs


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lag=st.sampled_from([0, 1, 3, 8]), seqs=st.integers(1, 6))
def test_requests_end_at_their_first_stop_token_however_late_tokens_are_recorded(seed, lag, seqs):
    rng = np.random.default_rng(seed)
    vocab = 97
    reqs = _requests(rng, 16, vocab, stop_share=0.7)
    alloc = BlockAllocator(60, block_size=4)
    sched = Scheduler(max_num_seqs=seqs, max_num_batched_tokens=64, allocator=alloc)
    for r in reqs:
        sched.add(r)
    batches = _serve(sched, reqs, lag, vocab)
    assert sched.finished == {r.request_id: _expected(r, vocab) for r in reqs}
    assert alloc.num_free == 60 and not sched.has_work
    for b in batches:
        assert len(b.seqs) <= seqs and len({q.request_id for q in b.seqs}) == len(b.seqs)
    # a stopped request is never scheduled more than `lag` steps after its stop token
    last_step = {}
    for i, b in enumerate(batches):
        for q in b.seqs:
            last_step[q.request_id] = i
    first_step = {}
    for i, b in enumerate(batches):
        for q in b.seqs:
            first_step.setdefault(q.request_id, i)
    for r in reqs:
        ran = last_step[r.request_id] - first_step[r.request_id] + 1
        assert len(_expected(r, vocab)) <= ran <= len(_expected(r, vocab)) + lag


def test_a_stop_token_frees_the_slot_for_a_waiting_request_at_once():
    vocab = 50
    stop = _stream(0, 1, vocab)  # request 0 stops at its second token
    sched = Scheduler(max_num_seqs=1, max_num_batched_tokens=16, allocator=BlockAllocator(8, block_size=4))
    sched.add(Request(0, [1, 2, 3], max_new_tokens=20, stop_token_ids=(stop,)))
    sched.add(Request(1, [4, 5], max_new_tokens=2))
    b0 = sched.schedule()
    sched.update(b0, [_stream(0, 0, vocab)])
    b1 = sched.schedule()
    assert [q.request_id for q in b1.seqs] == [0] and b1.seqs[0].stop_token_ids == (stop,)
    sched.update(b1, [stop])
    b2 = sched.schedule()  # request 0 is done: request 1 is admitted in its place
    assert [q.request_id for q in b2.seqs] == [1] and not b2.uniform_decode
    assert sched.finished[0] == (_stream(0, 0, vocab), stop)


def test_stop_token_ids_are_validated():
    with pytest.raises(ValueError, match="stop_token_ids"):
        Request("r", [1, 2], 4, stop_token_ids=(3, -1))
    assert Request("r", [1], 4, stop_token_ids=np.array([7, 9])).stop_token_ids == (7, 9)


def test_loop_params_hold_the_limit_then_each_rows_stop_ids():
    rng = np.random.default_rng()
    rows = 5
    stops = [tuple(rng.integers(0, 1000, size=int(rng.integers(0, MAX_STOP_IDS + 4))).tolist())
             for _ in range(3)]
    out = rng.integers(-5, 5, size=loop_params_size(8)).astype(np.int32)  # poisoned
    tail = out[loop_params_size(rows):].copy()
    used = pack_loop_params(out, 13, stops, rows)
    assert used == loop_params_size(rows) == 1 + rows * MAX_STOP_IDS
    assert out[0] == 13
    table = out[1:used].reshape(rows, MAX_STOP_IDS)
    for i in range(rows):
        want = list(stops[i][:MAX_STOP_IDS]) if i < len(stops) else []
        assert table[i].tolist() == want + [-1] * (MAX_STOP_IDS - len(want))
    np.testing.assert_array_equal(out[used:], tail)  # nothing past the rows is written


def test_loop_step_reference_marks_rows_done_and_ends_when_every_live_row_stopped():
    rng = np.random.default_rng()
    rows, steps, bs, blocks = 4, 6, 16, 3
    tok = rng.integers(0, 100, size=rows).astype(np.int32)
    stop = np.full((rows, MAX_STOP_IDS), -1, np.int32)
    stop[0, 2] = tok[0]  # row 0 stops now
    stop[1, 0] = (tok[1] + 1) % 100  # row 1 does not
    hist = rng.integers(-9, 0, size=(steps, rows)).astype(np.int32)
    pos = rng.integers(0, bs * blocks - 1, size=rows).astype(np.int32)
    tables = rng.integers(0, 50, size=(rows, blocks)).astype(np.int32)
    state = dict(history=hist, next_tokens=tok, positions=pos, seq_lens=pos + 1,
                 slot_mapping=np.zeros(rows, np.int32), token_source=np.full(rows, -1, np.int32),
                 block_tables=tables, stop_ids=stop, block_size=bs)
    done = np.zeros(rows, np.int32)
    # two live rows: row 0 is done, row 1 runs on
    got = R.decode_loop_step(**state, num_seqs=2, done=done, count=2, limit=6)
    assert got["history"][2].tolist() == tok.tolist() and (got["history"][[0, 1, 3, 4, 5]] < 0).all()
    assert got["done"].tolist() == [1, 0, 0, 0] and got["pred"] == 1 and got["count"] == 3
    assert got["positions"][:2].tolist() == (pos[:2] + 1).tolist() and got["positions"][2:].tolist() == pos[2:].tolist()
    # only row 0 live: every live row stopped, the loop ends before its limit
    got = R.decode_loop_step(**state, num_seqs=1, done=done, count=2, limit=6)
    assert got["pred"] == 0
    # the limit ends it too
    got = R.decode_loop_step(**state, num_seqs=2, done=done, count=5, limit=6)
    assert got["pred"] == 0 and got["history"][5].tolist() == tok.tolist()
