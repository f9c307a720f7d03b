"""Benchmark: one decode step of an 8-layer, hidden-1024 Llama (or, --model 1b, of
Llama-3.2-1B's shapes) at batch 1, 8, 32, 128.

`python -m cgraph.bench.decode` measures, side by side in one process on one GPU:
- cgraph NONE (eager kernel launches), FULL (one graph, decode attention path) and
  PIECEWISE (graph segments with attention as the eager break);
- the physical floor: (weight bytes + KV bytes read) / copy bandwidth, the bandwidth
  measured in the same run as (bytes read + bytes written) / time of a 1 GiB copy;
- PyTorch on the same device, same architecture and weights: plain torch ops, eager and
  captured with torch.cuda.CUDAGraph (paged KV gathered per layer, then
  scaled_dot_product_attention with a length mask);
- the strong torch peer (cgraph.bench.torch_peer): a gpt-fast-style decoder with a static
  KV cache compiled by torch.compile(mode="reduce-overhead"), on the same batch and KV,
  with its compile time and how many of its greedy tokens equal FULL's.

A step's time is the median over rounds of (time of `iters` back-to-back steps) / iters,
timed with device events; every sequence decodes at position `--context` (so each step
reads context + 1 keys per sequence per layer). Results go to notebooks/results/decode.*.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any, Callable

import numpy as np

from cgraph.bench.report import add_out_argument, write_results
from cgraph.bench.decode_models import BENCH_MODEL, LLAMA_1B, MODELS  # noqa: F401 - LLAMA_1B re-exported
from cgraph.core.config import GraphConfig
from cgraph.core.descriptors import BatchDescriptor
from cgraph.engine.blocks import BLOCK_SIZE, num_blocks_for
from cgraph.engine.metadata import build_metadata
from cgraph.engine.scheduler import ScheduledBatch, ScheduledSeq
from cgraph.models.config import LlamaConfig
from cgraph.models.weights import init_weights
from cgraph.core.modes import GraphMode



def time_steps(cp: Any, fn: Callable[[], Any], iters: int, rounds: int) -> float:
    """Median seconds per call of fn over `rounds` rounds of `iters` back-to-back calls."""
    for _ in range(3):
        fn()
    cp.cuda.get_current_stream().synchronize()
    samples = []
    for _ in range(rounds):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        samples.append(cp.cuda.get_elapsed_time(start, end) / 1e3 / iters)
    return statistics.median(samples)


def copy_bandwidth(cp: Any, nbytes: int = 1 << 30) -> float:
    """Device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    src = cp.random.random(nbytes // 4, dtype=cp.float32)
    dst = cp.empty_like(src)
    t = time_steps(cp, lambda: cp.copyto(dst, src), iters=10, rounds=5)
    return 2 * nbytes / t


def decode_batch(batch: int, context: int, rng: np.random.Generator) -> ScheduledBatch:
    """A uniform decode batch: every sequence at position `context`, distinct random blocks."""
    per = num_blocks_for(context + 1, BLOCK_SIZE)
    blocks = rng.permutation(batch * per).reshape(batch, per)
    seqs = tuple(ScheduledSeq(i, (int(rng.integers(0, BENCH_MODEL.vocab_size)),), context,
                              tuple(int(b) for b in blocks[i])) for i in range(batch))
    return ScheduledBatch(seqs, batch)


class TorchLlama:
    """The same decoder in plain torch ops (imported only here), for eager and CUDAGraph timing."""

    def __init__(self, cfg: LlamaConfig, w: dict, num_blocks: int) -> None:
        import torch

        self.torch, self.cfg = torch, cfg
        dev = lambda a: torch.from_numpy(np.ascontiguousarray(a)).cuda()  # noqa: E731
        self.embed = dev(w["model.embed_tokens.weight"])
        self.lm_head = dev(w["lm_head.weight"])
        self.norm = dev(w["model.norm.weight"])
        self.layers = []
        for n in range(cfg.num_layers):
            p = f"model.layers.{n}."
            qkv = np.concatenate([w[p + "self_attn.q_proj.weight"], w[p + "self_attn.k_proj.weight"],
                                  w[p + "self_attn.v_proj.weight"]])
            gu = np.concatenate([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]])
            self.layers.append((dev(w[p + "input_layernorm.weight"]), dev(qkv),
                                dev(w[p + "self_attn.o_proj.weight"]),
                                dev(w[p + "post_attention_layernorm.weight"]), dev(gu),
                                dev(w[p + "mlp.down_proj.weight"])))
        d = cfg.head_dim
        inv = 1.0 / (cfg.rope_base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        ang = torch.arange(cfg.max_seq_len, dtype=torch.float64)[:, None] * inv[None, :]
        self.cos, self.sin = ang.cos().float().cuda(), ang.sin().float().cuda()
        shape = (num_blocks, BLOCK_SIZE, cfg.num_kv_heads, d)
        self.kv = [(torch.randn(shape, dtype=torch.float16, device="cuda"),
                    torch.randn(shape, dtype=torch.float16, device="cuda")) for _ in range(cfg.num_layers)]

    def _rms(self, x: Any, g: Any) -> Any:
        return self.torch.nn.functional.rms_norm(x, (x.shape[-1],), weight=g, eps=self.cfg.rms_eps)

    def _rope(self, x: Any, pos: Any) -> Any:
        half = self.cfg.head_dim // 2
        c, s = self.cos[pos][:, None, :], self.sin[pos][:, None, :]
        a, b = x[..., :half].float(), x[..., half:].float()
        return self.torch.cat([a * c - b * s, b * c + a * s], -1).half()

    def step(self, ids: Any, pos: Any, slots: Any, tables: Any, lens: Any) -> Any:
        """Decode step for B sequences (one token each); returns greedy ids [B]."""
        torch, cfg = self.torch, self.cfg
        F = torch.nn.functional
        b, hq, hkv, d = ids.shape[0], cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        keys = tables.shape[1] * BLOCK_SIZE
        mask = (torch.arange(keys, device=ids.device)[None, :] < lens[:, None])[:, None, None, :]
        x = self.embed[ids]
        for (n_in, wqkv, wo, n_post, wgu, wdown), (kc, vc) in zip(self.layers, self.kv):
            h = self._rms(x, n_in)
            q, k, v = (h @ wqkv.T).split([hq * d, hkv * d, hkv * d], -1)
            q, k = self._rope(q.reshape(b, hq, d), pos), self._rope(k.reshape(b, hkv, d), pos)
            kc.view(-1, hkv, d).index_copy_(0, slots, k)
            vc.view(-1, hkv, d).index_copy_(0, slots, v.reshape(b, hkv, d))
            kk = kc[tables].reshape(b, keys, hkv, d).transpose(1, 2)
            vv = vc[tables].reshape(b, keys, hkv, d).transpose(1, 2)
            o = F.scaled_dot_product_attention(q[:, :, None, :], kk, vv, attn_mask=mask, enable_gqa=True)
            x = x + o.reshape(b, hq * d) @ wo.T
            h = self._rms(x, n_post)
            g, u = (h @ wgu.T).chunk(2, -1)
            x = x + (F.silu(g) * u) @ wdown.T
        return (self._rms(x, self.norm) @ self.lm_head.T).argmax(-1)


def bench_torch(cfg: LlamaConfig, w: dict, meta_by_batch: dict, num_blocks: int, iters: int,
                rounds: int) -> dict[int, tuple[float, float]]:
    """(eager seconds, graphed seconds) per batch size, timed with torch events."""
    import torch

    model = TorchLlama(cfg, w, num_blocks)
    out = {}

    def timed(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        samples = []
        for _ in range(rounds):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(iters):
                fn()
            e.record()
            e.synchronize()
            samples.append(s.elapsed_time(e) / 1e3 / iters)
        return statistics.median(samples)

    with torch.inference_mode():
        for batch, m in meta_by_batch.items():
            t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).long().cuda()  # noqa: E731
            args = (t(m.input_ids), t(m.positions), t(m.slot_mapping), t(m.block_tables), t(m.seq_lens))
            eager = timed(lambda: model.step(*args))
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    model.step(*args)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                model.step(*args)
            graphed = timed(graph.replay)
            out[batch] = (eager, graphed)
            del graph
    return out


def op_breakdown(cp: Any, eng: Any, batch: int, context: int, reps: int = 20) -> list[dict]:
    """GPU time of each op of one decode step at this batch (layer 0's weights), graph-timed.

    Each op is captured `reps` times into one graph so launch gaps stay out; the per-step
    estimate counts layer ops num_layers times. Expects the batch's metadata copied in.
    """
    from cgraph import kernels as K
    from cgraph.cuda.graph import capture
    from cgraph.models import llama

    model, cfg = eng.model, eng.model.cfg
    inp, ws = eng.views_for(batch, batch)
    layer, (kc, vc) = model.layers[0], eng.kv_cache[0]
    kv_bytes = batch * (context + 1) * 2 * cfg.kv_size * 2
    from cgraph.kernels.attention import DECODE_SERIAL_SPLITS, DECODE_SPLITS, decode_kernel, launch_paged_attention
    from cgraph.kernels.launch import device_facts

    facts = device_facts()
    default = decode_kernel(batch, cfg.num_kv_heads, facts.sm_count, facts.clusters)
    w = lambda name: layer[name].nbytes  # noqa: E731
    ops = [
        ("qkv gemm", lambda: K.gemm(ws.hidden, layer["w_qkv"], out=ws.qkv), w("w_qkv"), cfg.num_layers),
        ("rotary + kv write", lambda: K.rotary_and_cache(inp.positions, ws.q, ws.k3, ws.v3, model.cos_sin, kc, vc,
                                                         inp.slot_mapping), 0, cfg.num_layers),
        (f"paged attention (kernel {default})", lambda: llama._attention(ws.q3, kc, vc, inp, ws.attn3, 1, model.scale),
         kv_bytes, cfg.num_layers),
        ("o gemm", lambda: K.gemm(ws.attn, layer["wo"], out=ws.delta), w("wo"), cfg.num_layers),
        ("rms_norm + residual (x2)", lambda: K.rms_norm(ws.delta, layer["post_norm"], cfg.rms_eps,
                                                       out=ws.hidden, residual=ws.residual), 0,
         2 * cfg.num_layers),
        ("gate_up gemm", lambda: K.gemm(ws.hidden, layer["w_gate_up"], out=ws.gate_up), w("w_gate_up"),
         cfg.num_layers),
        ("silu_and_mul", lambda: K.silu_and_mul(ws.gate_up, out=ws.act), 0, cfg.num_layers),
        ("down gemm", lambda: K.gemm(ws.act, layer["w_down"], out=ws.delta), w("w_down"), cfg.num_layers),
        ("lm_head gemm", lambda: K.gemm(ws.last, model.lm_head, out=ws.logits), model.lm_head.nbytes, 1),
        ("argmax", lambda: K.argmax(ws.logits, out=ws.next_tokens), 0, 1),
    ]
    # the other decode attention kernels on this step (count 0: not in the step's sum)
    others = [v for v in [f"s{n}" for n in DECODE_SPLITS] + [f"s{n}serial" for n in DECODE_SERIAL_SPLITS]
              + ["h2k32"] if facts.clusters or v in ("s1", "h2k32")]
    for variant in (v for v in others if v != default):
        ops.append((f"paged attention, kernel {variant} (not the default {default})",
                    lambda v=variant: launch_paged_attention(
                        ws.q3, kc, vc, out=ws.attn3, block_tables=inp.block_tables, seq_lens=inp.seq_lens,
                        query_start_loc=inp.query_start_loc, num_seqs=inp.num_seqs, max_query_len=1,
                        scale=model.scale, variant=v), kv_bytes, 0))
    rows = []
    for name, op, nbytes, count in ops:
        def body(op=op):
            for _ in range(reps):
                op()
        g = capture(body, name=name)
        t = time_steps(cp, g.replay, iters=5, rounds=5) / reps
        g.close()
        rows.append({"batch": batch, "op": name, "us": t * 1e6, "per_step": count,
                     "step_us": t * 1e6 * count, "GB/s": nbytes / t / 1e9 if nbytes else ""})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="8x1024",
                    help="8x1024: the default benchmark model; 1b: Llama-3.2-1B shapes (results get a _1b suffix)")
    ap.add_argument("--batches", default="1,8,32,128")
    ap.add_argument("--context", type=int, default=512, help="KV entries before the decoded token")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-torch", action="store_true", help="measure no torch at all")
    ap.add_argument("--no-torch-compile", action="store_true", help="skip the torch.compile peer")
    ap.add_argument("--torch-autotune", action="store_true",
                    help='compile the peer with mode="max-autotune" (slow to compile)')
    ap.add_argument("--torch-gqa", choices=("fold", "enable", "repeat"), default="fold",
                    help="how the peer's attention shares KV heads (see cgraph.bench.torch_peer)")
    ap.add_argument("--torch-dynamic", action="store_true",
                    help="compile the peer once with a dynamic batch dimension (default: once per batch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--breakdown", action="store_true",
                    help="also time each op of the step (notebooks/results/decode_breakdown.*)")
    ap.add_argument("--batch-invariant", action="store_true",
                    help="the model's batch-invariant GEMM plan (LlamaModel(batch_invariant=True)); "
                         "results get the suffix _invariant")
    add_out_argument(ap)
    a = ap.parse_args(argv)
    from cgraph.cuda.device import require_device
    from cgraph.engine.engine import Engine
    from cgraph.models.llama import LlamaModel

    import cgraph.kernels as K
    from cgraph.cuda.graph import capture

    cp = require_device()
    cfg = MODELS[a.model]
    suffix = ("" if a.model == "8x1024" else f"_{a.model}") + ("_invariant" if a.batch_invariant else "")
    batches = [int(b) for b in a.batches.split(",")]
    rng = np.random.default_rng(a.seed)
    w = init_weights(cfg, a.seed)
    model = LlamaModel(cfg, w, batch_invariant=a.batch_invariant)
    top = max(batches)
    per_seq = num_blocks_for(a.context + 1, BLOCK_SIZE)
    gcfg = GraphConfig("full_and_piecewise", capture_sizes=batches, max_num_seqs=top,
                       max_num_batched_tokens=top)
    bw = copy_bandwidth(cp)
    rows, meta_by_batch, breakdown = [], {}, []
    peer, peer_note = None, "torch.compile peer not measured (--no-torch-compile)"
    if not (a.no_torch or a.no_torch_compile):
        try:
            from cgraph.bench import torch_peer

            peer = torch_peer.TorchPeer(cfg, w, gqa=a.torch_gqa, dynamic=a.torch_dynamic,
                                        mode="max-autotune" if a.torch_autotune else "reduce-overhead")
            peer_note = torch_peer.describe(peer)
        except Exception as exc:  # noqa: BLE001 - no torch, or no room for it: note why
            peer_note = f"torch.compile peer not measured: {type(exc).__name__}: {exc}"
    with Engine(model, gcfg, num_kv_blocks=top * per_seq) as eng:
        for k_cache, v_cache in eng.kv_cache:  # random keys and values: real data, not zeros
            k_cache[...] = cp.random.standard_normal(k_cache.shape, dtype=cp.float32).astype(cfg.dtype)
            v_cache[...] = cp.random.standard_normal(v_cache.shape, dtype=cp.float32).astype(cfg.dtype)
        eng.capture(progress=False)
        for batch in batches:
            sb = decode_batch(batch, a.context, rng)
            meta = build_metadata(sb, num_tokens=batch, num_seqs=batch, max_blocks=eng.max_blocks)
            meta_by_batch[batch] = build_metadata(sb, num_tokens=batch, num_seqs=batch, max_blocks=per_seq)
            eng.load_metadata(meta)
            full_desc = BatchDescriptor(batch, batch, True)
            piece_desc = full_desc.relax_for_mixed()
            t_none = time_steps(cp, lambda: eng.run_forward(batch, batch, 1), a.iters, a.rounds)
            t_full = time_steps(cp, lambda: eng.full.run(GraphMode.FULL, full_desc, batch, batch, 1),
                                a.iters, a.rounds)
            t_piece = time_steps(cp, lambda: eng.piecewise.run(GraphMode.PIECEWISE, piece_desc, batch,
                                                               batch, batch), a.iters, a.rounds)
            # same greedy tokens from all three (one more call each on the same inputs)
            toks = [f().get()[:batch].tolist() for f in (
                lambda: eng.run_forward(batch, batch, 1),
                lambda: eng.full.run(GraphMode.FULL, full_desc, batch, batch, 1),
                lambda: eng.piecewise.run(GraphMode.PIECEWISE, piece_desc, batch, batch, batch))]
            # the same FULL step captured with programmatic dependent launch off
            previous = K.set_programmatic_launch(False)
            try:
                plain = capture(eng.run_forward, batch, batch, 1, name=f"decode-{batch}-no-pdl")
            finally:
                K.set_programmatic_launch(previous)
            try:
                t_plain = time_steps(cp, plain.replay, a.iters, a.rounds)
                plain.replay()
                toks.append(plain.outputs.get()[:batch].tolist())
            finally:
                plain.close()
            peer_cols = {}
            if peer is not None:
                eng.run_forward(batch, batch, 1)  # cgraph's eager logits (.get() syncs), to compare the peer's with
                eager_logits = eng.views_for(batch, batch)[1].logits[:batch].get().astype(np.float32)
                try:
                    peer_cols = torch_peer.measure_batch(
                        peer, eng.kv_cache, meta_by_batch[batch].block_tables[:batch], meta.input_ids[:batch],
                        meta.positions[:batch], a.context, BLOCK_SIZE, np.asarray(toks[1]), eager_logits,
                        a.iters, a.rounds)
                    peer_cols["full/torch_compile"] = t_full * 1e6 / peer_cols["torch_compile_us"]
                except Exception as exc:  # noqa: BLE001 - report why the peer could not be measured
                    peer, peer_note = None, f"torch.compile peer failed at batch {batch}: {type(exc).__name__}: {exc}"
            kv_bytes = batch * (a.context + 1) * cfg.num_layers * 2 * cfg.kv_size * 2
            floor = (model.weight_bytes + kv_bytes) / bw
            rows.append({"batch": batch, "none_us": t_none * 1e6, "full_us": t_full * 1e6,
                         "full_no_pdl_us": t_plain * 1e6, "pdl_gain": t_plain / t_full,
                         "piecewise_us": t_piece * 1e6, "none/full": t_none / t_full,
                         "floor_us": floor * 1e6, "full/floor": t_full / floor,
                         "same_tokens": all(t == toks[0] for t in toks), **peer_cols})
            if a.breakdown:
                ops = op_breakdown(cp, eng, batch, a.context)
                ops.append({"batch": batch, "op": "sum of ops (estimate)", "us": "", "per_step": "",
                            "step_us": sum(r["step_us"] for r in ops), "GB/s": ""})
                ops.append({"batch": batch, "op": "FULL step (measured)", "us": "", "per_step": "",
                            "step_us": t_full * 1e6, "GB/s": ""})
                breakdown += ops
    torch_note = "torch not measured (--no-torch)"
    if not a.no_torch:
        try:
            res = bench_torch(cfg, w, meta_by_batch, top * per_seq, a.iters, a.rounds)
            import torch

            torch_note = f"torch {torch.__version__}"
            for r in rows:
                eager, graphed = res[r["batch"]]
                r.update({"torch_eager_us": eager * 1e6, "torch_graph_us": graphed * 1e6,
                          "full/torch_graph": r["full_us"] / (graphed * 1e6)})
        except Exception as exc:  # noqa: BLE001 - report why torch could not be measured
            torch_note = f"torch not measured: {type(exc).__name__}: {exc}"
    skips = {r["batch"]: r["cudagraph_skips"] for r in rows if "cudagraph_skips" in r}
    peer_note += f"; graphs Inductor ran without CUDA graphs, by batch (want 0): {skips}" if skips else ""
    notes = [
        f"model: {cfg.num_layers} layers, hidden {cfg.hidden_size}, {cfg.num_heads} heads / "
        f"{cfg.num_kv_heads} KV heads x {cfg.head_dim}, intermediate {cfg.intermediate_size}, "
        f"vocab {cfg.vocab_size}, float16; weights read per step {model.weight_bytes / 2**20:.1f} MiB"
        + ("; batch-invariant GEMM plan (LlamaModel(batch_invariant=True))" if a.batch_invariant else ""),
        f"every sequence decodes at position {a.context} (reads {a.context + 1} keys per layer)",
        f"copy bandwidth {bw / 1e9:.0f} GB/s (read + write of a 1 GiB device copy, same run); "
        "floor = (weight bytes + KV bytes read) / copy bandwidth",
        f"step time: median over {a.rounds} rounds of {a.iters} back-to-back steps, device events",
        "PIECEWISE runs the mixed-batch graph (attention eager between segments, general path)",
        "FULL graphs launch their kernels with programmatic dependent launch; full_no_pdl_us is the same step "
        "captured with it off (pdl_gain = full_no_pdl_us / full_us); same_tokens covers all four",
        torch_note + "; torch attention gathers the paged KV per layer then runs "
        "scaled_dot_product_attention with a length mask; fused qkv and gate/up matmuls (cuBLAS), F.rms_norm",
        peer_note + "; full/torch_compile = FULL step / peer step; peer_tokens_equal: share of rows whose "
        "greedy token equals FULL's; peer_logit_diff: max |peer logits - cgraph eager logits|",
    ]
    cols = ["batch", "none_us", "piecewise_us", "full_us", "full_no_pdl_us", "pdl_gain", "none/full", "floor_us",
            "full/floor",
            "torch_eager_us", "torch_graph_us", "full/torch_graph", "torch_compile_us", "torch_compile_s",
            "full/torch_compile", "peer_tokens_equal", "peer_logit_diff", "same_tokens"]
    if breakdown:
        write_results("decode_breakdown" + suffix, breakdown, title="Decode step by op (graph-timed, GPU time)",
                      notes=[f"bandwidth column: bytes of weights (gemm) or KV read (attention) / time; "
                             f"copy bandwidth {bw / 1e9:.0f} GB/s (read + write)",
                             "each op captured 20 times in one graph; layer ops count num_layers times"], out_dir=a.out)
    write_results("decode" + suffix, rows, title="Decode step: cgraph NONE / PIECEWISE / FULL vs floor and torch",
                  notes=notes, columns=cols, extra={"copy_bandwidth_Bps": bw, "context": a.context}, out_dir=a.out)


if __name__ == "__main__":
    main()
