"""Capture planning on a GPU: graph memory known before capture, lazy capture within a
memory limit with a negative cache, the engine sized from a memory budget, fallback warnings."""

from __future__ import annotations

import gc
import logging

import numpy as np
import pytest

from tests._gpu_helpers import poison, rand

pytestmark = pytest.mark.gpu

cp = pytest.importorskip("cupy")

from cgraph import (BatchDescriptor, CapacityError, GraphConfig, GraphMode, GraphPool, GraphRunner,  # noqa: E402
                    LazyCapture, build_dispatch_table, capture_all, estimate_graph_memory)
from cgraph.models.config import LlamaConfig, demo_config  # noqa: E402

HID = 256


def heavy(x, w, out):
    """Temporaries that scale with the batch: they come from the graph pool."""
    t = [x * w + i for i in range(6)]
    cp.add(sum(t), 1.0, out=out)
    return out


def _reference(x, w):
    return 6 * x * w + 15 + 1


def _table(sizes):
    return build_dispatch_table(GraphConfig("full", capture_sizes=sizes, max_num_seqs=max(sizes),
                                            max_num_batched_tokens=max(sizes)))


def test_estimate_equals_the_pool_capture_all_leaves():
    sizes = [1, 8, 64, 256, 1024, 4096]
    table = _table(sizes)
    x, w, out = rand(cp, (4096, HID)), rand(cp, (4096, HID)), cp.empty((4096, HID), cp.float32)
    runner = GraphRunner(heavy, GraphMode.FULL)
    views = lambda d: (x[: d.num_tokens], w[: d.num_tokens], out[: d.num_tokens])  # noqa: E731
    estimate = estimate_graph_memory(runner, table, views)
    assert len(runner) == 0 and estimate.largest.num_tokens == 4096  # nothing kept
    report = capture_all(runner, table, views, progress=False)
    assert estimate.pool_bytes == report.pool_bytes == runner.pool.total_bytes() > 0
    runner.close()


def _counting(runner):
    calls = []
    original = type(runner).capture_function

    def counted(*args, **kwargs):
        calls.append(kwargs.get("name"))
        return original(*args, **kwargs)

    runner.capture_function = counted  # an instance attribute shadows the class's capturer
    return calls


def test_lazy_capture_refuses_what_the_limit_cannot_hold_and_never_retries():
    table = _table([16, 4096])
    small, big = BatchDescriptor(16), BatchDescriptor(4096)
    x, w, out = rand(cp, (4096, HID)), rand(cp, (4096, HID)), cp.empty((4096, HID), cp.float32)
    probe = GraphRunner(heavy, GraphMode.FULL)
    need_small = estimate_graph_memory(probe, _table([16]), lambda d: (x[:16], w[:16], out[:16])).pool_bytes
    need_big = estimate_graph_memory(probe, table, lambda d: (x, w, out)).pool_bytes
    assert need_small < need_big
    limit = need_small + (need_big - need_small) // 2
    pool = GraphPool(limit_bytes=limit)
    runner = GraphRunner(heavy, GraphMode.FULL, pool=pool, lazy=LazyCapture(after_uses=2))
    calls = _counting(runner)
    for use in range(4):
        for desc in (small, big):
            n = desc.num_tokens
            x[:n] = rand(cp, (n, HID))
            poison(out[:n])
            runner.run(GraphMode.FULL, desc, x[:n], w[:n], out[:n])
            np.testing.assert_allclose(out[:n].get(), _reference(x[:n].get(), w[:n].get()), rtol=1e-5)
            assert pool.total_bytes() <= limit
        if use == 0:
            assert len(calls) == 0  # after_uses=2: the first use of each runs eagerly
    assert small in runner and big not in runner and runner.refused == {big}
    assert len(calls) == 2  # small once, big once (refused), never again
    stats = runner.stats
    assert (stats.captures, stats.refusals) == (1, 1)
    assert stats.eager_fallbacks == 1 + 4  # small's first use, big's four uses
    runner.close()
    pool.close()


def _requests(cfg, n=12, seed=None):
    from cgraph.engine import Request

    rng = np.random.default_rng(seed)
    return [Request(i, rng.integers(0, cfg.vocab_size, size=int(rng.integers(1, 60))),
                    max_new_tokens=int(rng.integers(2, 12))) for i in range(n)]


def _engine_config(mode="full_and_piecewise"):
    return GraphConfig(mode, capture_sizes=[1, 2, 4, 8, 16, 32, 64, 128], max_num_seqs=8,
                       max_num_batched_tokens=128)


@pytest.mark.parametrize("shape", ["demo", "llama-1b-shapes"])
def test_engine_graph_memory_estimate_equals_the_measured_pool(shape):
    from cgraph.engine import Engine
    from cgraph.models import LlamaModel

    if shape == "demo":
        cfg = demo_config(4, 512, max_seq_len=256)
    else:  # Llama-3.2-1B layer shapes and vocabulary, two layers (graph memory is per layer-independent)
        cfg = LlamaConfig(num_layers=2, hidden_size=2048, num_heads=32, num_kv_heads=8, head_dim=64,
                          intermediate_size=8192, vocab_size=128256, max_seq_len=256)
    model = LlamaModel(cfg, seed=int(np.random.default_rng().integers(1 << 30)))
    with Engine(model, _engine_config()) as engine:
        estimate = engine.estimate_graph_memory()
        assert engine.pool_bytes == 0 and all(len(r) == 0 for r in engine.runners)
        engine.capture(progress=False)
        assert engine.pool_bytes == estimate


def test_encoder_graph_memory_estimate_equals_the_measured_pool():
    from cgraph.encoder.manager import EncoderGraphManager, estimate_encoder_graph_memory
    from cgraph.encoder.model import EncoderSpec, VisionEncoder

    model = VisionEncoder(EncoderSpec(channels=3, patch=4, hidden=64, heads=1, layers=2, mlp=128,
                                      merger=64, out_dim=48, max_grid=64), seed=3)
    budgets = (16, 64, 256, 1024)
    estimate = estimate_encoder_graph_memory(model, budgets, 8)
    with EncoderGraphManager(model, budgets, 8) as manager:
        assert manager.pool.total_bytes() == estimate > 0


def test_lazy_engine_generates_the_eager_tokens_and_counts_its_captures():
    from cgraph.engine import Engine
    from cgraph.models import LlamaModel

    cfg = demo_config(2, 256, vocab_size=1024, max_seq_len=128)
    model = LlamaModel(cfg, seed=5)
    requests = _requests(cfg)
    with Engine(model, GraphConfig("none", max_num_seqs=8, max_num_batched_tokens=128)) as eager:
        want = eager.generate(requests).outputs
    with Engine(model, _engine_config(), lazy=LazyCapture()) as lazy:
        got = lazy.generate(requests)
        stats = lazy.runner_stats()
    assert got.outputs == want
    assert stats["captures"] > 0 and stats["refusals"] == 0
    assert stats["captures"] == len({(s.mode, s.padded_tokens, s.uniform) for s in got.steps if s.mode != "none"})


def test_engine_sizes_its_kv_cache_from_a_memory_budget():
    from cgraph.engine import Engine
    from cgraph.models import LlamaModel

    cfg = demo_config(2, 256, vocab_size=1024, max_seq_len=128)
    model = LlamaModel(cfg, seed=6)
    requests = _requests(cfg)
    with Engine(model, GraphConfig("none", max_num_seqs=8, max_num_batched_tokens=128)) as eager:
        want = eager.generate(requests).outputs
        static = eager.memory.static_bytes
        block = eager.memory.block_bytes
    budget = static + 40 * block + block // 2
    with Engine(model, _engine_config(), memory_budget=budget) as engine:
        plan = engine.memory
        assert plan.kv_blocks == (budget - plan.static_bytes - plan.graph_bytes) // block
        assert plan.total_bytes <= budget and engine.num_kv_blocks == plan.kv_blocks
        engine.capture(progress=False)
        assert engine.pool_bytes == plan.graph_bytes
        assert engine.generate(requests).outputs == want
    with pytest.raises(CapacityError, match="KV cache"):
        Engine(model, _engine_config(), memory_budget=static + block)
    # a share of the device that leaves room for about 4000 blocks (64 MiB) beyond what is
    # in use now; what else the process allocates meanwhile (about a MiB) moves it a little
    del engine
    gc.collect()
    cp.get_default_memory_pool().free_all_blocks()
    free, total = cp.cuda.runtime.memGetInfo()
    share = (total - free + static + 4000 * block) / total
    with Engine(model, _engine_config(), memory_budget=share) as engine:
        assert 3800 <= engine.num_kv_blocks <= 4200, engine.memory
        engine.capture(progress=False)
        assert engine.generate(requests).outputs == want


def test_fallbacks_warn_once_per_cause_and_are_counted(caplog):
    from cgraph.engine import Engine, Request
    from cgraph.models import LlamaModel

    cfg = demo_config(2, 256, vocab_size=1024, max_seq_len=256)
    model = LlamaModel(cfg, seed=7)
    rng = np.random.default_rng()
    requests = [Request(i, rng.integers(0, 1024, size=int(rng.integers(40, 60))), max_new_tokens=3)
                for i in range(6)]
    gcfg = GraphConfig("full", capture_sizes=[1, 2, 4, 8, 16, 32], max_num_seqs=8, max_num_batched_tokens=512)
    with caplog.at_level(logging.WARNING, logger="cgraph"), Engine(model, gcfg) as engine:
        engine.capture(progress=False)
        result = engine.generate(requests)
        counts = engine.fallbacks.as_dict()
    eager_steps = sum(s.mode == "none" for s in result.steps)
    assert eager_steps >= 1 and counts == {"batch above the largest capture size": eager_steps}
    first = [r for r in caplog.records if "ran eagerly (batch above" in r.getMessage()]
    assert len(first) == 1 and "add a larger capture size" in first[0].getMessage()
    assert any(f"{eager_steps} step(s) ran eagerly so far" in r.getMessage() for r in caplog.records)
