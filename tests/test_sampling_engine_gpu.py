"""GPU: sampled generation in the engine. Per-request sampling parameters give the eager
tokens in every graph mode (FULL, PIECEWISE, padded batches, multi-step decode, both loops),
greedy requests keep their greedy tokens in a mixed batch, a request's tokens do not depend
on the batch it runs in (with a batch-invariant model), and each step's token is the reference sampler's pick."""

from __future__ import annotations

import numpy as np
import pytest

from cgraph import GraphConfig, SamplingParams
from cgraph.core.sampling import GREEDY
from cgraph.engine import BlockAllocator, Request, Scheduler
from cgraph.kernels import random_reference as RR
from cgraph.models import LlamaConfig, init_weights

pytestmark = pytest.mark.gpu

TINY = LlamaConfig(num_layers=2, hidden_size=128, num_heads=4, num_kv_heads=2, head_dim=32,
                   intermediate_size=256, vocab_size=512, max_seq_len=256)
SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


@pytest.fixture(scope="module")
def weights():
    return init_weights(TINY, int(np.random.default_rng().integers(1 << 30)))


@pytest.fixture(scope="module")
def model(weights):
    from cgraph.models import LlamaModel

    return LlamaModel(TINY, weights)


def _params(g: np.random.Generator, i: int) -> SamplingParams:
    kind = i % 4
    if kind == 0:
        return GREEDY
    return SamplingParams(temperature=float(g.uniform(0.6, 1.5)), top_k=int(g.choice([0, 5, 40])) if kind != 2 else 0,
                          top_p=float(g.uniform(0.5, 0.95)) if kind != 1 else 1.0, seed=int(g.integers(0, 2**63)))


@pytest.fixture(scope="module")
def workload():
    g = np.random.default_rng()
    return [Request(i, g.integers(0, TINY.vocab_size, size=int(g.integers(1, 60))),
                    max_new_tokens=int(g.integers(1, 24)), sampling=_params(g, i)) for i in range(24)]


def _generate(model, reqs, mode="none", *, steps=1, overlap=True, max_seqs=8):
    from cgraph.engine import Engine

    cfg = GraphConfig(mode, capture_sizes=None if mode == "none" else SIZES, max_num_seqs=max_seqs,
                      max_num_batched_tokens=256)
    with Engine(model, cfg, overlap=overlap, decode_steps_per_launch=steps) as eng:
        if mode != "none":
            eng.capture(progress=False)
        result = eng.generate(reqs)
        return result, eng.generate(reqs).outputs  # a second run on the same engine


@pytest.fixture(scope="module")
def eager(model, workload):
    result, again = _generate(model, workload)
    assert again == result.outputs, "sampling must be reproducible from the seeds"
    return result.outputs


@pytest.mark.parametrize("mode, steps, overlap", [("full", 1, True), ("piecewise", 1, True),
                                                  ("full_decode_only", 1, True), ("full_and_piecewise", 1, True),
                                                  ("full", 1, False), ("full", 4, True), ("full_and_piecewise", 16, True),
                                                  ("none", 4, False)])
def test_sampled_generation_gives_the_eager_tokens_in_every_mode(model, workload, eager, mode, steps, overlap):
    result, again = _generate(model, workload, mode, steps=steps, overlap=overlap)
    assert result.outputs == eager
    assert again == eager
    if mode != "none":
        assert result.summary["graph_hit_rate"] > 0


def test_sampling_actually_samples_and_greedy_requests_keep_their_greedy_tokens(model, workload, eager):
    greedy_reqs = [Request(r.request_id, r.prompt, r.max_new_tokens) for r in workload]
    all_greedy, _ = _generate(model, greedy_reqs, "full_and_piecewise")
    for r in workload:
        if r.sampling.greedy:
            assert eager[r.request_id] == all_greedy.outputs[r.request_id]
    sampled = [r for r in workload if not r.sampling.greedy and r.max_new_tokens > 3]
    differs = [r.request_id for r in sampled if eager[r.request_id] != all_greedy.outputs[r.request_id]]
    assert len(differs) >= len(sampled) // 2, "sampled requests should leave the greedy path"
    # another seed, another sequence (for at least most requests)
    reseeded = [Request(r.request_id, r.prompt, r.max_new_tokens,
                        sampling=SamplingParams(temperature=r.sampling.temperature, top_k=r.sampling.top_k,
                                                top_p=r.sampling.top_p, seed=r.sampling.seed ^ 1))
                if not r.sampling.greedy else r for r in workload]
    other, _ = _generate(model, reseeded, "full")
    assert sum(other.outputs[r.request_id] != eager[r.request_id] for r in sampled) >= len(sampled) // 2


def test_a_requests_tokens_do_not_depend_on_its_batch(weights, workload):
    """With a batch-invariant model: alone, in a smaller batch, or behind other requests, the
    same seed gives the same tokens (a request's draws depend on its seed and position, and
    its logits no longer on the batch)."""
    from cgraph.models import LlamaModel

    invariant = LlamaModel(TINY, weights, batch_invariant=True)
    want, _ = _generate(invariant, workload)
    sampled = [r for r in workload if not r.sampling.greedy][:3]
    for r in sampled:
        alone, _ = _generate(invariant, [r], "full", max_seqs=4)
        assert alone.outputs[r.request_id] == want.outputs[r.request_id]
    reordered, _ = _generate(invariant, list(reversed(workload)), "full_and_piecewise")
    assert reordered.outputs == want.outputs


def test_a_reordered_workload_gives_its_own_eager_tokens(model, workload):
    """Other batches and rows for every request (the workload reversed): graphs give the eager
    tokens of that order. (That they are also the original order's tokens needs the
    batch-invariant model of the test above: with the default GEMM plan a row's logits can
    move in the last bits with its step's row count, and a draw near a CDF boundary then
    picks the neighbouring token.)"""
    reordered = list(reversed(workload))
    eager_reordered, _ = _generate(model, reordered, "none")
    graphs, _ = _generate(model, reordered, "full_and_piecewise")
    assert graphs.outputs == eager_reordered.outputs


def test_each_step_samples_the_reference_token_at_its_position(model):
    """Eager steps: the token of every row is the NumPy sampler's pick from the row's logits,
    with the row's seed and the position of the token it samples."""
    from cgraph.engine import Engine

    g = np.random.default_rng()
    reqs = [Request(i, g.integers(0, TINY.vocab_size, size=int(g.integers(2, 30))), max_new_tokens=5,
                    sampling=_params(g, i + 1)) for i in range(4)]
    with Engine(model, GraphConfig("none", max_num_seqs=4, max_num_batched_tokens=128)) as eng:
        sched = Scheduler(max_num_seqs=4, max_num_batched_tokens=128, allocator=BlockAllocator(eng.num_kv_blocks))
        for r in reqs:
            sched.add(r)
        lengths = {r.request_id: len(r.prompt) for r in reqs}
        by_id = {r.request_id: r for r in reqs}
        while (batch := sched.schedule()) is not None:
            eng.buffers["logits"].fill(float("nan"))
            tokens, _ = eng.step(batch)
            logits = eng.buffers["logits"][: len(batch.seqs)].astype("float32").get()
            for row, seq in enumerate(batch.seqs):
                p = by_id[seq.request_id].sampling
                bits = RR.row_bits([p.seed], [lengths[seq.request_id]])[0]
                assert tokens[row] == RR.sample_row(logits[row], p.temperature, p.top_k, p.top_p, bits)
                lengths[seq.request_id] += 1
            sched.update(batch, tokens)


def test_decode_steps_padded_past_max_num_seqs_advance_on_the_device(model, workload):
    """max_num_seqs 5 is no capture size: a decode of 5 rows pads to 8 tokens (PIECEWISE),
    and the overlapped loop advances its metadata on the device (5 sequence rows, 8 token rows)."""
    want, _ = _generate(model, workload, max_seqs=5)
    got, again = _generate(model, workload, "full_and_piecewise", max_seqs=5)
    assert got.outputs == want.outputs == again
    assert any(s.mode == "piecewise" and s.uniform and s.padded_tokens > 5 for s in got.steps)
