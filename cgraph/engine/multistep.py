"""Several decode steps in one launch: a device-side loop around the forward (cgraph.while_loop).

For a uniform decode batch the engine may run up to K steps of the same sequences in one
launch (Engine(decode_steps_per_launch=K)). The loop body is one decode step: the
forward (its decodes fed the token their row sampled last iteration), then one
bookkeeping kernel (cgraph.kernels.decode_loop_step): the sampled tokens recorded into
row `count` of a history buffer and kept for the next feed, the metadata advanced, each
row marked done once it sampled one of its stop ids, the count increased. The loop runs
while count < limit and some row is not done, and never more than K times (a bound
enforced on the device); the host writes the limit and the rows' stop ids per launch, in
one copy, and then reads all the launch's tokens at once.

The host picks the limit from the scheduler itself: it schedules steps until one differs
from the first (a request would finish by length, or join), so a launch runs the steps
the single-step engine would run, on the same batch, and gives the same tokens. A row
that stops early keeps computing (its tokens are discarded by the scheduler, which ends
the request when it records the stop token); when every row has stopped the loop ends
early. The device checks the first MAX_STOP_IDS stop ids of a request; the scheduler
checks them all. Captured per graph key for FULL decode batches; under NONE the same
function runs eagerly, its loop on the host.
"""

from __future__ import annotations

from typing import Any, Sequence

from cgraph.core.checks import check_int
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.dispatch import capture_descriptors
from cgraph.core.modes import GraphMode
from cgraph.engine.blocks import BLOCK_SIZE


#: stop ids per request the device checks (a request with more ends on the host alone)
MAX_STOP_IDS = 8


def loop_buffer_specs(steps: int, max_seqs: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Static buffers of the decode loop: token history, iteration count, predicate, rows
    done, and the per-launch parameters (the limit, then each row's stop ids)."""
    return {"history": ((steps * max_seqs,), "int32"), "loop_count": ((1,), "int32"),
            "loop_pred": ((1,), "int32"), "loop_done": ((max_seqs,), "int32"),
            "loop_params": ((loop_params_size(max_seqs),), "int32")}


def loop_params_size(rows: int) -> int:
    """Elements of the per-launch parameters of `rows` rows: the limit and the stop ids."""
    return 1 + rows * MAX_STOP_IDS


def pack_loop_params(out: Any, limit: int, stop_token_ids: Sequence[Sequence[int]], rows: int) -> int:
    """Write a launch's parameters into `out` (int32, host): out[0] = limit, then rows x
    MAX_STOP_IDS stop ids (-1 pads; rows past the batch get none). Returns the count written."""
    used = loop_params_size(rows)
    out[:used] = -1
    out[0] = limit
    for i, ids in enumerate(stop_token_ids):
        ids = tuple(ids)[:MAX_STOP_IDS]
        out[1 + i * MAX_STOP_IDS: 1 + i * MAX_STOP_IDS + len(ids)] = ids
    return used


class DecodeLoop:
    """The multi-step decode function of one engine, and its runner (see the module doc)."""

    def __init__(self, engine: Any, steps: int, *, debug: bool | None = None) -> None:
        from cgraph.cuda.runner import GraphRunner  # noqa: PLC0415 - GPU layer

        self.steps = check_int(steps, "decode_steps_per_launch", 1, hint="1 runs one step per launch")
        self.engine = engine
        self.runner = GraphRunner(self, GraphMode.FULL, pool=engine.pool, debug=debug, name="llama-decode-loop")

    def history(self, seq_rows: int) -> Any:
        """The token history of a launch on seq_rows rows: [steps, seq_rows], contiguous."""
        return self.engine.buffers["history"][: self.steps * seq_rows].reshape(self.steps, seq_rows)

    def __call__(self, num_tokens: int, num_seqs: int) -> Any:
        """Up to `steps` decode steps on the static views of one size (the captured function)."""
        import cgraph.kernels as K  # noqa: PLC0415 - GPU layer
        from cgraph.kernels.control import while_loop  # noqa: PLC0415
        engine, bufs = self.engine, self.engine.buffers
        inputs, ws = engine.views_for(num_tokens, num_seqs)
        count, pred, done = bufs["loop_count"], bufs["loop_pred"], bufs["loop_done"][:num_seqs]
        params = bufs["loop_params"]
        limit = params[:1]
        stop_ids = params[1: loop_params_size(num_seqs)].reshape(num_seqs, MAX_STOP_IDS)
        history = self.history(num_seqs)

        def step(_: Any) -> None:
            engine.model.forward(inputs, ws, engine.kv_cache, max_query_len=1)
            # the next iteration's decodes read `sampled` (LlamaModel.forward's token feed)
            K.decode_loop_step(history, ws.next_tokens, ws.sampled[:num_seqs], inputs.positions, inputs.seq_lens,
                               inputs.slot_mapping, inputs.token_source, inputs.block_tables, inputs.num_seqs,
                               stop_ids, done, count, limit, pred, block_size=BLOCK_SIZE)

        K.start_decode_loop(count, done, limit, pred)
        while_loop(lambda _: pred, step, None, max_iterations=self.steps)
        return history

    def capture(self) -> int:
        """Capture the loop for every FULL key a decode batch can dispatch to (at most
        max_num_seqs tokens); returns how many were captured."""
        from cgraph.cuda.context import capture_phase  # noqa: PLC0415

        engine = self.engine
        # the capture's warm-up and first replay run the loop: with a limit of 0 they run no
        # step, so they leave the metadata and the KV cache as they are
        engine.buffers["loop_params"].fill(0)
        keys = [d for d in capture_descriptors(engine.table)[GraphMode.FULL]
                if d.num_tokens <= engine.max_seqs and (d.uniform or d.num_reqs is None)]
        with capture_phase():
            for desc in keys:
                if desc not in self.runner:
                    self.runner.capture(desc, desc.num_tokens, engine.num_seq_rows(desc.num_tokens))
        return len(keys)

    def launch(self, mode: GraphMode, desc: BatchDescriptor, seq_rows: int) -> None:
        """Run the loop of a prepared decode batch (graph, or eagerly for NONE)."""
        if mode is GraphMode.FULL:
            self.runner.run(mode, desc, desc.num_tokens, seq_rows)
        else:
            self(desc.num_tokens, seq_rows)

    def close(self) -> None:
        self.runner.close()
