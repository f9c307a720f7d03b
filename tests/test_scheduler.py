"""Scheduler: budgets, decode-first batches, FCFS admission, KV reservation, completion."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cgraph.engine import BlockAllocator, Request, Scheduler


def _sched(seqs=4, tokens=64, blocks=256):
    return Scheduler(max_num_seqs=seqs, max_num_batched_tokens=tokens,
                     allocator=BlockAllocator(blocks))


def _run_to_end(sched, rng, max_steps=10_000):
    """Drive the scheduler with random sampled tokens; return the batches and the feed."""
    batches, fed = [], {}
    for _ in range(max_steps):
        batch = sched.schedule()
        if batch is None:
            return batches, fed
        sampled = rng.integers(0, 1000, size=len(batch.seqs))
        for seq, tok in zip(batch.seqs, sampled):
            fed.setdefault(seq.request_id, []).append(int(tok))
        batches.append(batch)
        sched.update(batch, sampled.tolist())
    raise AssertionError("scheduler did not finish")


def test_first_step_prefills_whole_prompts_then_decodes_one_token_each():
    rng = np.random.default_rng()
    s = _sched()
    prompts = [rng.integers(0, 100, size=n).tolist() for n in (5, 9)]
    for i, p in enumerate(prompts):
        s.add(Request(i, p, max_new_tokens=3))
    b0 = s.schedule()
    assert b0.num_decodes == 0 and b0.num_prefills == 2 and not b0.uniform_decode
    assert [list(q.token_ids) for q in b0.seqs] == prompts
    assert [q.start for q in b0.seqs] == [0, 0]
    s.update(b0, [11, 22])
    b1 = s.schedule()
    assert b1.uniform_decode and b1.num_tokens == 2
    assert [q.token_ids for q in b1.seqs] == [(11,), (22,)]
    assert [q.start for q in b1.seqs] == [5, 9]


def test_request_generates_exactly_max_new_tokens_and_frees_its_blocks():
    rng = np.random.default_rng()
    alloc = BlockAllocator(64)
    s = Scheduler(max_num_seqs=3, max_num_batched_tokens=40, allocator=alloc)
    want = {i: int(rng.integers(1, 9)) for i in range(7)}
    for i, n in want.items():
        s.add(Request(i, rng.integers(0, 50, size=int(rng.integers(1, 30))), max_new_tokens=n))
    _, fed = _run_to_end(s, rng)
    assert {k: len(v) for k, v in s.finished.items()} == want
    assert {k: tuple(v) for k, v in fed.items()} == s.finished
    assert alloc.num_free == 64


def test_budgets_hold_and_decodes_come_first():
    rng = np.random.default_rng()
    s = _sched(seqs=3, tokens=20)
    for i in range(10):
        s.add(Request(i, rng.integers(0, 50, size=int(rng.integers(1, 21))), max_new_tokens=4))
    batches, _ = _run_to_end(s, rng)
    for b in batches:
        assert len(b.seqs) <= 3 and b.num_tokens <= 20
        assert all(q.query_len == 1 for q in b.seqs[:b.num_decodes])
        assert all(q.start == 0 for q in b.seqs[b.num_decodes:])


def test_admission_is_first_come_first_served():
    s = _sched(seqs=4, tokens=10)
    s.add(Request("a", [1] * 8, max_new_tokens=2))
    s.add(Request("b", [2] * 5, max_new_tokens=2))  # does not fit next to "a"
    s.add(Request("c", [3] * 1, max_new_tokens=2))  # would fit, but must not pass "b"
    b0 = s.schedule()
    assert [q.request_id for q in b0.seqs] == ["a"]
    s.update(b0, [7])
    b1 = s.schedule()
    assert [q.request_id for q in b1.seqs] == ["a", "b", "c"]


def test_kv_blocks_are_reserved_for_the_whole_request_and_gate_admission():
    alloc = BlockAllocator(4, block_size=16)
    s = Scheduler(max_num_seqs=4, max_num_batched_tokens=64, allocator=alloc)
    s.add(Request(0, [1] * 20, max_new_tokens=13))  # 32 KV entries -> 2 blocks
    s.add(Request(1, [1] * 20, max_new_tokens=14))  # 33 entries -> 3 blocks: must wait
    b = s.schedule()
    assert [q.request_id for q in b.seqs] == [0] and len(b.seqs[0].block_ids) == 2
    assert alloc.num_free == 2


def test_ragged_ids_unique_and_unschedulable_requests_rejected():
    s = _sched(tokens=16, blocks=2)
    s.add(Request("x", [1, 2], 1))
    with pytest.raises(ValueError, match="already in use"):
        s.add(Request("x", [1], 1))
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        s.add(Request("y", [1] * 17, 1))
    with pytest.raises(ValueError, match="KV blocks"):
        s.add(Request("z", [1] * 16, 32))
    with pytest.raises(ValueError, match="empty"):
        Request("e", [], 1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        Request("e", [1], 0)
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        Scheduler(max_num_seqs=8, max_num_batched_tokens=4, allocator=BlockAllocator(4))


def test_schedule_twice_without_update_is_an_error():
    s = _sched()
    s.add(Request(0, [1, 2, 3], 2))
    b = s.schedule()
    with pytest.raises(RuntimeError, match="update"):
        s.schedule()
    s.update(b, [5])
    assert s.schedule().uniform_decode


@settings(max_examples=60, deadline=None)
@given(seqs=st.integers(1, 8), extra=st.integers(0, 40),
       lens=st.lists(st.tuples(st.integers(1, 48), st.integers(1, 6)), min_size=1, max_size=20),
       seed=st.integers(0, 2**32 - 1))
def test_random_workloads_complete_within_budgets(seqs, extra, lens, seed):
    tokens = max(seqs, 48) + extra
    alloc = BlockAllocator(40, block_size=4)
    s = Scheduler(max_num_seqs=seqs, max_num_batched_tokens=tokens, allocator=alloc)
    rng = np.random.default_rng(seed)
    for i, (p, n) in enumerate(lens):
        if -(-(p + n - 1) // 4) <= 40:
            s.add(Request(i, rng.integers(0, 9, size=p), max_new_tokens=n))
    batches, fed = _run_to_end(s, rng)
    for b in batches:
        assert len(b.seqs) <= seqs and b.num_tokens <= tokens
        assert len({q.request_id for q in b.seqs}) == len(b.seqs)
    for rid, out in s.finished.items():
        assert tuple(fed[rid]) == out
    assert alloc.num_free == 40 and not s.has_work


def test_step_summary_counts_hits_padding_and_percentiles():
    from cgraph.engine.stats import StepRecord, summarize

    rng = np.random.default_rng()
    steps, hits, real, padded = [], 0, 0, 0
    for _ in range(50):
        uniform = bool(rng.integers(0, 2))
        mode = ["none", "full", "piecewise"][int(rng.integers(0, 3))]
        n = int(rng.integers(1, 100))
        p = n if mode == "none" else n + int(rng.integers(0, 8))
        steps.append(StepRecord(mode, uniform, n, p, min(n, 4), float(rng.uniform(1e-4, 1e-2))))
        hits += mode != "none"
        real, padded = real + n, padded + p
    s = summarize(steps, generated_tokens=1234)
    assert s["tokens_per_s"] == pytest.approx(1234 / sum(x.seconds for x in steps))
    assert s["graph_hit_rate"] == pytest.approx(hits / 50)
    assert s["padding_waste"] == pytest.approx((padded - real) / padded)
    dec = sorted(x.seconds * 1e3 for x in steps if x.uniform)
    assert s["decode_p50_ms"] == pytest.approx(float(np.median(dec)))
    assert dec[0] <= s["decode_p50_ms"] <= s["decode_p99_ms"] <= dec[-1]
    assert s["decode_steps"] + s["mixed_steps"] == 50
    with pytest.raises(ValueError, match="at least one"):
        summarize([], 0)


def test_synthetic_workload_plan_matches_a_scheduler_run():
    from cgraph.engine.workload import plan_batches, synthetic_requests

    seed = int(np.random.default_rng().integers(1 << 30))
    reqs = synthetic_requests(20, max_prompt=60, new_tokens=5, vocab_size=300, seed=seed)
    assert reqs == synthetic_requests(20, max_prompt=60, new_tokens=5, vocab_size=300, seed=seed)
    assert all(1 <= len(r.prompt) <= 60 and max(r.prompt) < 300 for r in reqs)
    plan = plan_batches(reqs, max_num_seqs=6, max_num_batched_tokens=80)
    s = _sched(seqs=6, tokens=80, blocks=6 * 64)
    for r in reqs:
        s.add(r)
    batches, _ = _run_to_end(s, np.random.default_rng())
    assert plan == [(b.num_tokens, b.uniform_decode) for b in batches]
    assert sum(n for n, _ in plan) == sum(len(r.prompt) + 4 for r in reqs)
    assert any(u for _, u in plan) and any(not u for _, u in plan)
    with pytest.raises(ValueError, match="max_prompt"):
        synthetic_requests(3, max_prompt=0, new_tokens=1, vocab_size=10)


def test_engine_star_import_lists_only_names_that_exist():
    import cgraph.engine as engine

    for name in engine.__all__:
        assert hasattr(engine, name) or name == "Engine", name
    namespace: dict = {}
    exec("from cgraph.engine import *", namespace)  # noqa: S102 - the point of the test
    assert "Scheduler" in namespace and "EngineConfig" not in engine.__all__
