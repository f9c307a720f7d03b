"""The decode benchmarks' model shapes (random weights), shared by cgraph.bench.decode and
cgraph.bench.torch_peer."""

from __future__ import annotations

from cgraph.models.config import LlamaConfig

BENCH_MODEL = LlamaConfig(num_layers=8, hidden_size=1024, num_heads=16, num_kv_heads=8, head_dim=64,
                          intermediate_size=2816, vocab_size=32000, max_seq_len=1024)
#: Llama-3.2-1B's shapes (random weights)
LLAMA_1B = LlamaConfig(num_layers=16, hidden_size=2048, num_heads=32, num_kv_heads=8, head_dim=64,
                       intermediate_size=8192, vocab_size=128256, max_seq_len=1024)
MODELS = {"8x1024": BENCH_MODEL, "1b": LLAMA_1B}
