"""GPU: the Llama forward against a NumPy reference, and generation equal to eager in every mode."""

from __future__ import annotations

import numpy as np
import pytest

from cgraph import GraphConfig
from cgraph.engine import BlockAllocator, Request, Scheduler
from cgraph.models import LlamaConfig, init_weights
from tests._llama_reference import reference_logits

pytestmark = pytest.mark.gpu

TINY = LlamaConfig(num_layers=2, hidden_size=128, num_heads=4, num_kv_heads=2, head_dim=32,
                   intermediate_size=256, vocab_size=512, max_seq_len=256)


@pytest.fixture(scope="module")
def tiny_model():
    from cgraph.models import LlamaModel

    seed = int(np.random.default_rng().integers(1 << 30))
    w = init_weights(TINY, seed)
    return LlamaModel(TINY, w), w


def test_prefill_then_decode_logits_match_numpy_reference(tiny_model):
    from cgraph.engine import Engine

    model, w = tiny_model
    rng = np.random.default_rng()
    prompts = [rng.integers(0, TINY.vocab_size, size=int(n)).tolist() for n in rng.integers(5, 40, 3)]
    eng = Engine(model, GraphConfig("none", max_num_seqs=4, max_num_batched_tokens=128), debug=True)
    try:
        sched = Scheduler(max_num_seqs=4, max_num_batched_tokens=128,
                          allocator=BlockAllocator(eng.num_kv_blocks))
        for i, p in enumerate(prompts):
            sched.add(Request(i, p, max_new_tokens=3))
        seqs = {i: list(p) for i, p in enumerate(prompts)}
        for _ in range(3):  # one prefill step, then two decode steps
            batch = sched.schedule()
            eng.buffers["logits"].fill(float("nan"))
            tokens, rec = eng.step(batch)
            got = eng.buffers["logits"][: len(batch.seqs)].get().astype(np.float32)
            for row, seq in enumerate(batch.seqs):
                ref = reference_logits(TINY, [w], seqs[seq.request_id])[-1]
                np.testing.assert_allclose(got[row], ref, atol=0.06, rtol=0.05)
                assert tokens[row] == int(np.argmax(got[row]))
                seqs[seq.request_id].append(tokens[row])
            sched.update(batch, tokens)
    finally:
        eng.close()


MODES = ["full", "piecewise", "full_decode_only", "full_and_piecewise"]


@pytest.fixture(scope="module")
def eager_run(tiny_model):
    from cgraph.engine import Engine

    model, _ = tiny_model
    rng = np.random.default_rng()
    reqs = [Request(i, rng.integers(0, TINY.vocab_size, size=int(rng.integers(1, 100))),
                    max_new_tokens=int(rng.integers(1, 20))) for i in range(24)]
    eng = Engine(model, GraphConfig("none", max_num_seqs=8, max_num_batched_tokens=256), debug=True)
    try:
        result = eng.generate(reqs)
    finally:
        eng.close()
    return reqs, result


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_generates_exactly_the_eager_tokens(tiny_model, eager_run, mode):
    from cgraph.engine import Engine

    model, _ = tiny_model
    reqs, eager = eager_run
    assert {r.request_id: len(eager.outputs[r.request_id]) for r in reqs} == \
        {r.request_id: r.max_new_tokens for r in reqs}
    sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    cfg = GraphConfig(mode, capture_sizes=sizes, max_num_seqs=8, max_num_batched_tokens=256)
    eng = Engine(model, cfg, debug=True)
    try:
        eng.capture(progress=False)
        result = eng.generate(reqs)
    finally:
        eng.close()
    assert result.outputs == eager.outputs
    modes_used = {s.mode for s in result.steps}
    expected = {"full": {"full"}, "piecewise": {"piecewise"}, "full_decode_only": {"full", "none"},
                "full_and_piecewise": {"full", "piecewise"}}[mode]
    assert modes_used == expected, modes_used
    assert result.summary["graph_hit_rate"] > 0
    for s in result.steps:
        assert s.padded_tokens >= s.num_tokens


def test_replay_after_a_different_graph_keeps_tokens_equal(tiny_model, eager_run):
    """Run workloads one after another on one engine: graphs replay over reused KV blocks and
    buffers, and each order gives the eager tokens of that order. (That the reversed order
    also gives every request its original tokens needs a batch-invariant model: the test
    below.)"""
    from cgraph.engine import Engine

    model, _ = tiny_model
    reqs, eager = eager_run
    backwards = list(reversed(reqs))
    with Engine(model, GraphConfig("none", max_num_seqs=8, max_num_batched_tokens=256)) as eng:
        eager_backwards = eng.generate(backwards)
    cfg = GraphConfig("full_and_piecewise", capture_sizes=[1, 2, 4, 8, 16, 32, 64, 128, 256],
                      max_num_seqs=8, max_num_batched_tokens=256)
    with Engine(model, cfg) as eng:
        eng.capture(progress=False)
        first = eng.generate(reqs)
        second = eng.generate(backwards)
        third = eng.generate(reqs)
    assert first.outputs == eager.outputs == third.outputs
    assert second.outputs == eager_backwards.outputs


@pytest.mark.parametrize("mode", ["none", "full_and_piecewise"])
def test_a_batch_invariant_model_gives_each_request_its_tokens_in_any_batch(tiny_model, mode):
    """LlamaModel(batch_invariant=True): a request's tokens do not depend on the requests
    beside it. The workload reversed, each request alone, and the original order (eager)
    give every request the same tokens, graphs as well as eager."""
    from cgraph.engine import Engine
    from cgraph.models import LlamaModel

    _, w = tiny_model
    model = LlamaModel(TINY, w, batch_invariant=True)
    rng = np.random.default_rng()
    reqs = [Request(i, rng.integers(0, TINY.vocab_size, size=int(rng.integers(1, 100))),
                    max_new_tokens=int(rng.integers(1, 20))) for i in range(24)]
    with Engine(model, GraphConfig("none", max_num_seqs=8, max_num_batched_tokens=256)) as eng:
        want = eng.generate(reqs).outputs
    cfg = GraphConfig(mode, capture_sizes=None if mode == "none" else [1, 2, 4, 8, 16, 32, 64, 128, 256],
                      max_num_seqs=8, max_num_batched_tokens=256)
    with Engine(model, cfg) as eng:
        if mode != "none":
            eng.capture(progress=False)
        reversed_order = eng.generate(list(reversed(reqs))).outputs
        alone = {r.request_id: eng.generate([r]).outputs[r.request_id] for r in reqs[::5]}
    assert reversed_order == want, "a request's tokens changed with the batch composition"
    assert alone == {i: want[i] for i in alone}


@pytest.mark.parametrize("mode", ["none", "full", "full_and_piecewise"])
@pytest.mark.parametrize("overlap", [True, False])
def test_both_loops_generate_the_eager_tokens_while_requests_join_and_finish(tiny_model, eager_run,
                                                                              mode, overlap):
    """24 requests through 8 sequence slots: requests finish and others join mid-stream."""
    from cgraph.engine import Engine

    model, _ = tiny_model
    reqs, eager = eager_run
    cfg = GraphConfig(mode, capture_sizes=None if mode == "none" else [1, 2, 4, 8, 16, 32, 64, 128, 256],
                      max_num_seqs=8, max_num_batched_tokens=256)
    with Engine(model, cfg, overlap=overlap) as eng:
        if mode != "none":
            eng.capture(progress=False)
        result = eng.generate(reqs)
    assert result.outputs == eager.outputs
    joined = [s for s in result.steps if not s.uniform][1:]  # admissions after the first step
    assert joined, "the workload must admit requests mid-stream"
    for s in result.steps:
        assert s.gpu_seconds > 0 and s.seconds > 0
    assert all(s.gap_seconds >= 0 for s in result.steps[1:])
    summary = result.summary
    assert summary["decode_gpu_p50_ms"] > 0 and 0 < summary["gpu_busy"] <= 1.0 + 1e-6
    assert summary["tokens_per_s"] == pytest.approx(sum(len(v) for v in result.outputs.values())
                                                    / summary["wall_s"])


def test_sync_step_with_host_tokens_and_overlapped_run_agree_on_one_engine(tiny_model, eager_run):
    """step() (tokens read back each step, no device feed) and generate() on one engine."""
    from cgraph.engine import Engine

    model, _ = tiny_model
    reqs, eager = eager_run
    cfg = GraphConfig("full", capture_sizes=[1, 2, 4, 8, 16, 32, 64, 128, 256], max_num_seqs=8,
                      max_num_batched_tokens=256)
    with Engine(model, cfg) as eng:
        eng.capture(progress=False)
        sched = Scheduler(max_num_seqs=8, max_num_batched_tokens=256, allocator=BlockAllocator(eng.num_kv_blocks))
        for r in reqs:
            sched.add(r)
        while (batch := sched.schedule()) is not None:
            tokens, record = eng.step(batch)
            again, _ = eng.step(batch, eager=True)  # the same padded step again, eagerly
            assert again == tokens and record.gpu_seconds > 0
            sched.update(batch, tokens)
        assert sched.finished == eager.outputs
        assert eng.generate(reqs).outputs == eager.outputs


@pytest.mark.parametrize("mode, steps", [("full", 4), ("full_and_piecewise", 16), ("none", 4)])
def test_multi_step_decode_generates_the_eager_tokens(tiny_model, eager_run, mode, steps):
    """Up to K decode steps per launch (a device-side loop), requests joining and finishing."""
    from cgraph.engine import Engine

    model, _ = tiny_model
    reqs, eager = eager_run
    cfg = GraphConfig(mode, capture_sizes=None if mode == "none" else [1, 2, 4, 8, 16, 32, 64, 128, 256],
                      max_num_seqs=8, max_num_batched_tokens=256)
    with Engine(model, cfg, decode_steps_per_launch=steps) as eng:
        if mode != "none":
            eng.capture(progress=False)
        result = eng.generate(reqs)
        again = eng.generate(reqs, overlap=False)
    assert result.outputs == eager.outputs == again.outputs
    multi = [s for s in result.steps if s.steps > 1]
    assert multi and max(s.steps for s in result.steps) <= steps
    assert sum(s.steps for s in result.steps) == len(eager.steps)  # the same steps, fewer launches


def _truncated(out: tuple[int, ...], stops: tuple[int, ...]) -> tuple[int, ...]:
    for i, tok in enumerate(out):
        if tok in stops:
            return out[: i + 1]
    return out


@pytest.fixture(scope="module")
def stop_run(eager_run):
    """The eager workload with stop ids: most requests stop at a token they sample mid-run."""
    reqs, eager = eager_run
    rng = np.random.default_rng()
    stopped, want = [], {}
    for r in reqs:
        out = eager.outputs[r.request_id]
        stops = ((int(out[rng.integers(0, len(out))]), int(rng.integers(0, TINY.vocab_size)))
                 if rng.random() < 0.75 else ())
        stopped.append(Request(r.request_id, r.prompt, r.max_new_tokens, stop_token_ids=stops))
        want[r.request_id] = _truncated(out, stops)
    assert sum(len(v) for v in want.values()) < sum(len(v) for v in eager.outputs.values())
    return stopped, want


@pytest.mark.parametrize("mode, steps, overlap", [("none", 1, True), ("full", 1, True), ("full", 1, False),
                                                  ("full_and_piecewise", 1, True), ("piecewise", 1, False),
                                                  ("full", 16, True), ("full", 4, False), ("none", 4, True)])
def test_stop_tokens_end_requests_with_the_eager_tokens_in_every_mode(tiny_model, stop_run, mode, steps, overlap):
    """Each request's tokens are the eager run's up to and including its first stop token;
    requests that stop free their slot for waiting ones (24 requests, 8 slots)."""
    from cgraph.engine import Engine

    model, _ = tiny_model
    reqs, want = stop_run
    cfg = GraphConfig(mode, capture_sizes=None if mode == "none" else [1, 2, 4, 8, 16, 32, 64, 128, 256],
                      max_num_seqs=8, max_num_batched_tokens=256)
    with Engine(model, cfg, overlap=overlap, decode_steps_per_launch=steps) as eng:
        if mode != "none":
            eng.capture(progress=False)
        result = eng.generate(reqs)
    assert result.outputs == want


def test_multi_step_loop_ends_on_the_device_when_every_row_stopped(tiny_model):
    """One request, K = 16: the loop stops at the iteration that sampled the stop token."""
    from cgraph.engine import Engine

    model, _ = tiny_model
    rng = np.random.default_rng()
    cfg = GraphConfig("full", capture_sizes=[1, 2, 4, 8, 16], max_num_seqs=4, max_num_batched_tokens=16)
    with Engine(model, cfg, decode_steps_per_launch=16) as eng:
        eng.capture(progress=False)
        for _ in range(8):  # a prompt whose run samples a new token within the first launch
            prompt = rng.integers(0, TINY.vocab_size, size=12)
            out = eng.generate([Request(0, prompt, max_new_tokens=40)]).outputs[0]
            j = next((i for i in range(1, 17) if out[i] not in out[:i]), None)
            if j is not None:
                break
        else:
            pytest.skip(f"the random model repeats one token for every prompt tried: {out[:17]}")
        got = eng.generate([Request(1, prompt, max_new_tokens=40, stop_token_ids=(out[j],))], overlap=False)
        assert got.outputs[1] == out[: j + 1]
        # the decode launch ran iterations 0 .. j - 1 (token 0 came from the prefill)
        assert int(eng.buffers["loop_count"].get()[0]) == j
        assert [s.steps for s in got.steps] == [1, 16]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        with Engine(model, GraphConfig("none", max_num_seqs=4, max_num_batched_tokens=16)) as eng:
            eng.generate([Request(2, prompt, 4, stop_token_ids=(TINY.vocab_size,))])
