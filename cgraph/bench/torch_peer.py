"""The strong torch peer of the decode benchmark: a gpt-fast-style Llama decoder.

Same weights (the cgraph.models.weights dict) and the same math as cgraph.models.llama:
RMSNorm in float32 with the config's eps, neox rotary (rotate halves, the fp32 table of
cgraph.kernels.reference.cos_sin_cache), GQA, SiLU-gated MLP, separate or tied lm_head,
greedy argmax. Each layer holds a static KV cache [batch, Hkv, max_len, D] (registered
buffers, so CUDA graphs see fixed addresses); a step writes the new K/V at each row's
position with index_put_ and runs F.scaled_dot_product_attention over the whole cache
with a boolean mask of the valid keys (key position <= the row's position).

GQA modes: "fold" views the Hq/Hkv query heads sharing a KV head as that head's query
rows (q [B, Hkv, Hq/Hkv, D] against k [B, Hkv, L, D]: no KV copy, exact for one query
per sequence); "enable" passes enable_gqa=True; "repeat" repeats the KV heads.

The step is compiled with torch.compile(mode="reduce-overhead", fullgraph=True):
Inductor's kernels replayed as CUDA graphs (cudagraph trees), or "max-autotune".
torch is imported only inside the functions here, so the benchmark runs without it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Mapping

import attrs
import numpy as np

from cgraph.core.errors import ArgumentError
from cgraph.kernels.reference import cos_sin_cache
from cgraph.models.config import LlamaConfig

GQA_MODES = ("fold", "enable", "repeat")
COMPILE_MODES = ("reduce-overhead", "max-autotune")


def paged_slots(block_tables: np.ndarray, length: int, block_size: int) -> np.ndarray:
    """[B, length] int64: the paged-cache slot (block * block_size + offset) of positions
    0..length-1 of each row, in the order a contiguous cache holds them."""
    tables = np.asarray(block_tables)
    if tables.ndim != 2 or tables.dtype.kind not in "iu":
        raise ArgumentError(f"block_tables: shape {tables.shape} dtype {tables.dtype}, expected a 2-d "
                            "integer array [rows, blocks]")
    if not 0 <= length <= tables.shape[1] * block_size:
        raise ArgumentError(f"length={length}: expected 0..{tables.shape[1] * block_size} "
                            f"({tables.shape[1]} blocks of {block_size} per row); pass wider tables")
    pos = np.arange(length)
    return tables[:, pos // block_size].astype(np.int64) * block_size + pos % block_size


@attrs.frozen(eq=False)
class PeerResult:
    """One batch of the peer: step time, compile time and one step's outputs."""

    step_s: float          # median seconds per compiled step (device events)
    compile_s: float       # wall seconds of the first calls (compile, warm-up, graph record)
    tokens: np.ndarray     # [B] greedy ids of the compiled step
    logits: np.ndarray     # [B, V] float32 logits of the compiled step
    cudagraph_skips: int   # Inductor's count of graphs it ran without CUDA graphs (want 0)


def _module(torch: Any, cfg: LlamaConfig, w: Mapping[str, np.ndarray], device: str, gqa: str) -> Any:
    """The decoder as an nn.Module whose weights and caches are buffers (static addresses)."""
    nn, F = torch.nn, torch.nn.functional
    dt = torch.float16 if cfg.dtype == "float16" else torch.bfloat16
    hq, hkv, d, eps = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rms_eps
    half, rep = d // 2, hq // hkv

    def dev(a: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device=device, dtype=dt)

    def rms(x: Any, g: Any) -> Any:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * g.float()).to(dt)

    def rope(x: Any, cos: Any, sin: Any) -> Any:  # x [B, heads, D]; neox halves, fp32 math
        a, b = x[..., :half].float(), x[..., half:].float()
        return torch.cat([a * cos - b * sin, b * cos + a * sin], -1).to(dt)

    class Layer(nn.Module):
        def __init__(self, p: str) -> None:
            super().__init__()
            qkv = np.concatenate([w[p + "self_attn.q_proj.weight"], w[p + "self_attn.k_proj.weight"],
                                  w[p + "self_attn.v_proj.weight"]])
            gate_up = np.concatenate([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]])
            for name, a in (("input_norm", w[p + "input_layernorm.weight"]), ("wqkv", qkv),
                            ("wo", w[p + "self_attn.o_proj.weight"]),
                            ("post_norm", w[p + "post_attention_layernorm.weight"]), ("wgu", gate_up),
                            ("wdown", w[p + "mlp.down_proj.weight"])):
                self.register_buffer(name, dev(a))
            self.register_buffer("k_cache", torch.zeros(0, device=device, dtype=dt))
            self.register_buffer("v_cache", torch.zeros(0, device=device, dtype=dt))

        def forward(self, x: Any, res: Any, rows: Any, pos: Any, cos: Any, sin: Any, mask: Any) -> Any:
            b = x.shape[0]
            res = x if res is None else res + x
            h = rms(res, self.input_norm)
            q, k, v = F.linear(h, self.wqkv).split([hq * d, hkv * d, hkv * d], -1)
            q, k = rope(q.view(b, hq, d), cos, sin), rope(k.view(b, hkv, d), cos, sin)
            self.k_cache[rows, :, pos] = k  # index_put_: [B, Hkv, D] at (row, :, pos[row])
            self.v_cache[rows, :, pos] = v.view(b, hkv, d)
            kc, vc = self.k_cache, self.v_cache
            if gqa == "fold":
                o = F.scaled_dot_product_attention(q.view(b, hkv, rep, d), kc, vc, attn_mask=mask)
            elif gqa == "enable":
                o = F.scaled_dot_product_attention(q.view(b, hq, 1, d), kc, vc, attn_mask=mask, enable_gqa=True)
            else:
                o = F.scaled_dot_product_attention(q.view(b, hq, 1, d), kc.repeat_interleave(rep, 1),
                                                   vc.repeat_interleave(rep, 1), attn_mask=mask)
            res = res + F.linear(o.reshape(b, hq * d), self.wo)
            g, u = F.linear(rms(res, self.post_norm), self.wgu).chunk(2, -1)
            return F.linear((F.silu(g.float()) * u.float()).to(dt), self.wdown), res

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("embed", dev(w["model.embed_tokens.weight"]))
            tied = "lm_head.weight" not in w or w["lm_head.weight"] is w["model.embed_tokens.weight"]
            self.register_buffer("lm_head", self.embed if tied else dev(w["lm_head.weight"]))
            self.register_buffer("norm", dev(w["model.norm.weight"]))
            self.register_buffer("cos_sin", torch.from_numpy(
                cos_sin_cache(cfg.max_seq_len, d, cfg.rope_base)).to(device))
            self.layers = nn.ModuleList(Layer(f"model.layers.{n}.") for n in range(cfg.num_layers))

        def setup_caches(self, batch: int, max_len: int) -> None:
            for layer in self.layers:
                layer.k_cache = torch.zeros(batch, hkv, max_len, d, device=device, dtype=dt)
                layer.v_cache = torch.zeros(batch, hkv, max_len, d, device=device, dtype=dt)
            # weights and caches keep their addresses: CUDA graphs read them in place
            for buf in self.buffers():
                torch._dynamo.mark_static_address(buf, guard=False)

        def forward(self, ids: Any, pos: Any) -> tuple[Any, Any]:
            """ids [B], pos [B] (int64) -> (greedy ids [B], logits [B, V])."""
            b, max_len = ids.shape[0], self.layers[0].k_cache.shape[2]
            cs = self.cos_sin[pos]
            cos, sin = cs[:, None, :half], cs[:, None, half:]
            keys = torch.arange(max_len, device=ids.device)
            mask = (keys[None, :] <= pos[:, None])[:, None, None, :]  # [B, 1, 1, L]
            rows = torch.arange(b, device=ids.device)
            x, res = F.embedding(ids, self.embed), None
            for layer in self.layers:
                x, res = layer(x, res, rows, pos, cos, sin, mask)
            logits = F.linear(rms(res + x, self.norm), self.lm_head)
            return logits.argmax(-1), logits

    return Decoder()


class TorchPeer:
    """The gpt-fast-style decoder on the GPU and its compiled step (see the module doc)."""

    def __init__(self, cfg: LlamaConfig, weights: Mapping[str, np.ndarray], *, gqa: str = "fold",
                 mode: str = "reduce-overhead", dynamic: bool = False, device: str = "cuda") -> None:
        if gqa not in GQA_MODES:
            raise ArgumentError(f"gqa={gqa!r}: expected one of {GQA_MODES}")
        if mode not in COMPILE_MODES:
            raise ArgumentError(f"mode={mode!r}: expected one of {COMPILE_MODES}")
        import torch

        self.torch, self.cfg, self.device = torch, cfg, device
        self.gqa, self.mode, self.dynamic = gqa, mode, dynamic
        self.model = _module(torch, cfg, weights, device, gqa)
        # one compiled function: a new batch size recompiles (dynamic=False: gpt-fast's
        # static shapes) or reuses one dynamic-batch graph set (dynamic=True)
        self.step = torch.compile(self.model, mode=mode, fullgraph=True, dynamic=dynamic)

    def load_cache(self, paged: list[tuple[Any, Any]], block_tables: np.ndarray, context: int,
                   max_len: int, block_size: int) -> None:
        """Fresh caches for len(block_tables) rows of max_len keys, positions 0..context-1
        copied from a paged cache (per layer (k, v) [blocks, block_size, Hkv, D], any
        DLPack array); later positions stay zero."""
        torch = self.torch
        if not context < max_len <= self.cfg.max_seq_len:
            raise ArgumentError(f"max_len={max_len}: expected context ({context}) < max_len <= "
                                f"max_seq_len ({self.cfg.max_seq_len})")
        slots = torch.from_numpy(paged_slots(block_tables, context, block_size)).to(self.device)
        self.model.setup_caches(len(block_tables), max_len)
        hkv, d = self.cfg.num_kv_heads, self.cfg.head_dim
        for layer, (k, v) in zip(self.model.layers, paged):
            for dst, src in ((layer.k_cache, k), (layer.v_cache, v)):
                src = torch.from_dlpack(src) if not isinstance(src, torch.Tensor) else src
                dst[:, :, :context] = src.reshape(-1, hkv, d)[slots].transpose(1, 2)

    def forward_eager(self, ids: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One uncompiled step (writes this step's K/V): (greedy ids [B], float32 logits [B, V])."""
        with self.torch.no_grad():
            t, logits = self.model(*self._inputs(ids, pos))
        return t.cpu().numpy(), logits.float().cpu().numpy()

    def _inputs(self, ids: np.ndarray, pos: np.ndarray) -> tuple[Any, Any]:
        torch = self.torch
        ids = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(self.device)
        pos = torch.from_numpy(np.asarray(pos, dtype=np.int64)).to(self.device)
        return ids, pos

    def run(self, ids: np.ndarray, pos: np.ndarray, iters: int, rounds: int) -> PeerResult:
        """Compile (first calls, timed on the wall clock), then time the compiled step:
        median over `rounds` of (device time of `iters` back-to-back steps) / iters.
        Needs load_cache first; every call decodes the same tokens at the same positions."""
        torch = self.torch
        from torch._dynamo.utils import counters

        skips0 = counters["inductor"]["cudagraph_skips"]
        ids_t, pos_t = self._inputs(ids, pos)
        # fixed input addresses: replays read them in place instead of copying them in
        torch._dynamo.mark_static_address(ids_t, guard=False)
        torch._dynamo.mark_static_address(pos_t, guard=False)

        def call() -> Any:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are done with
            return self.step(ids_t, pos_t)

        with torch.no_grad():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(3):  # compile; cudagraph trees warm up, then record
                call()
                torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
            for _ in range(3):
                call()
            torch.cuda.synchronize()
            samples = []
            for _ in range(rounds):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(iters):
                    call()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1e3 / iters)
            toks, logits = call()
            toks, logits = toks.cpu().numpy(), logits.float().cpu().numpy()
        skips = counters["inductor"]["cudagraph_skips"] - skips0
        return PeerResult(statistics.median(samples), compile_s, toks, logits, int(skips))


def describe(peer: TorchPeer) -> str:
    """One note line: torch version and how the peer was compiled."""
    torch = peer.torch
    return (f"torch.compile peer: torch {torch.__version__}, mode={peer.mode!r}, fullgraph=True, "
            f"dynamic={peer.dynamic}, GQA {peer.gqa!r}; static KV cache [B, Hkv, context + 8, D] per layer, "
            "F.scaled_dot_product_attention with a boolean mask of the valid keys, greedy argmax in the graph; "
            "compile_s = wall seconds of the first 3 calls per batch shape")


def measure_batch(peer: TorchPeer, paged: list[tuple[Any, Any]], block_tables: np.ndarray, ids: np.ndarray,
                  pos: np.ndarray, context: int, block_size: int, full_tokens: np.ndarray,
                  eager_logits: np.ndarray, iters: int, rounds: int) -> dict[str, Any]:
    """The peer's columns of one decode-benchmark row: the same batch (its KV copied from
    cgraph's paged cache, max_len = context + 8) timed compiled, with the share of rows
    whose greedy token equals cgraph FULL's and the max |logit difference| against
    cgraph's eager logits (fp16 rounding may flip near-ties, so the share may be < 1)."""
    peer.load_cache(paged, block_tables, context, context + 8, block_size)
    r = peer.run(ids, pos, iters, rounds)
    full_tokens = np.asarray(full_tokens)
    print(f"torch.compile peer, batch {len(ids)}: compile {r.compile_s:.1f} s, step {r.step_s * 1e6:.0f} us, "
          f"tokens equal to FULL {float(np.mean(r.tokens == full_tokens)):.3f}, max |logit diff| "
          f"{float(np.abs(r.logits - eager_logits).max()):.4g}, cudagraph skips {r.cudagraph_skips}", flush=True)
    return {"torch_compile_us": r.step_s * 1e6, "torch_compile_s": r.compile_s,
            "peer_tokens_equal": float(np.mean(r.tokens == full_tokens)),
            "peer_logit_diff": float(np.abs(r.logits - np.asarray(eager_logits, np.float32)).max()),
            "cudagraph_skips": r.cudagraph_skips}


def main(argv: list[str] | None = None) -> None:
    """`python -m cgraph.bench.torch_peer`: the peer alone (random paged KV), each GQA mode
    and compile setting at each batch, to pick the decode benchmark's default."""
    import argparse

    from cgraph.bench.decode_models import MODELS
    from cgraph.bench.report import add_out_argument, write_results
    from cgraph.models.weights import init_weights

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="1b")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--gqa", default="fold,enable,repeat", help="comma-separated GQA modes")
    ap.add_argument("--dynamic", action="store_true", help="one dynamic-batch compile per mode")
    ap.add_argument("--autotune", action="store_true", help='mode="max-autotune"')
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", default="cuda", help="torch device (timing needs CUDA)")
    add_out_argument(ap)
    a = ap.parse_args(argv)
    import torch

    cfg, bs = MODELS[a.model], 16
    w, rng, rows = init_weights(cfg, 0), np.random.default_rng(0), []
    for gqa in a.gqa.split(","):
        peer = TorchPeer(cfg, w, gqa=gqa, dynamic=a.dynamic, device=a.device,
                         mode="max-autotune" if a.autotune else "reduce-overhead")
        for b in (int(x) for x in a.batches.split(",")):
            per = -(-(a.context + 1) // bs)
            shape = (b * per, bs, cfg.num_kv_heads, cfg.head_dim)
            paged = [(torch.randn(shape, dtype=torch.float16, device=a.device),
                      torch.randn(shape, dtype=torch.float16, device=a.device)) for _ in range(cfg.num_layers)]
            peer.load_cache(paged, rng.permutation(b * per).reshape(b, per), a.context, a.context + 8, bs)
            del paged
            ids, pos = rng.integers(0, cfg.vocab_size, b), np.full(b, a.context)
            eager, _ = peer.forward_eager(ids, pos)
            r = peer.run(ids, pos, a.iters, a.rounds)
            rows.append({"gqa": gqa, "batch": b, "step_us": r.step_s * 1e6, "compile_s": r.compile_s,
                         "tokens_equal_eager": float(np.mean(r.tokens == eager)), "cudagraph_skips": r.cudagraph_skips})
            print(rows[-1], flush=True)
        del peer
        torch._dynamo.reset()
    suffix = "" if a.model == "8x1024" else f"_{a.model}"
    write_results("torch_peer" + suffix, rows, title="torch.compile decode peer: GQA modes", out_dir=a.out,
                  notes=[describe_settings(torch, a.autotune, a.dynamic), f"context {a.context}, random KV"])


def describe_settings(torch: Any, autotune: bool, dynamic: bool) -> str:
    return (f"torch {torch.__version__}, mode={'max-autotune' if autotune else 'reduce-overhead'!r}, "
            f"fullgraph=True, dynamic={dynamic}")


if __name__ == "__main__":
    main()
