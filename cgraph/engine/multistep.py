"""Several decode steps in one launch: a device-side loop around the forward (cgraph.while_loop).

For a uniform decode batch the engine may run up to K steps of the same sequences in one
launch (Engine(decode_steps_per_launch=K)). The loop body is one decode step: the
forward (its decodes fed the token their row sampled last iteration), the sampled
tokens recorded into row `count` of a history buffer and kept for the next feed, the
metadata advanced on the device (cgraph.kernels.advance_decode), the count increased.
The loop runs while count < limit, a device scalar the host writes per launch, and never
more than K times (a bound enforced on the device). The host then reads all the
launch's tokens at once.

The host picks the limit from the scheduler itself: it schedules steps until one differs
from the first (a request would finish, or join), so a launch runs exactly the steps the
single-step engine would run, on the same batch, and gives the same tokens. Captured per
graph key for FULL decode batches; under NONE the same function runs eagerly, its loop
on the host.
"""

from __future__ import annotations

from typing import Any

from cgraph.core.checks import check_int
from cgraph.core.descriptors import BatchDescriptor
from cgraph.core.dispatch import capture_descriptors
from cgraph.core.modes import GraphMode
from cgraph.engine.blocks import BLOCK_SIZE


def loop_buffer_specs(steps: int, max_seqs: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Static buffers of the decode loop: token history, iteration count, limit, predicate."""
    return {"history": ((steps * max_seqs,), "int32"), "loop_count": ((1,), "int32"),
            "loop_limit": ((1,), "int32"), "loop_pred": ((1,), "int32")}


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
        from cgraph.cuda.device import require_device  # noqa: PLC0415

        cp = require_device()
        engine, bufs = self.engine, self.engine.buffers
        inputs, ws = engine.views_for(num_tokens, num_seqs)
        count, limit, pred = bufs["loop_count"], bufs["loop_limit"], bufs["loop_pred"]
        history = self.history(num_seqs)

        def more(_: Any) -> Any:
            cp.less(count, limit, out=pred)
            return pred

        def step(_: Any) -> None:
            engine.model.forward(inputs, ws, engine.kv_cache, max_query_len=1)
            K.record_step_tokens(history, ws.next_tokens, count)
            ws.sampled[:num_seqs] = ws.next_tokens  # the next iteration's decodes read these
            K.advance_decode(inputs.positions, inputs.seq_lens, inputs.slot_mapping, inputs.token_source,
                             inputs.block_tables, inputs.num_seqs, block_size=BLOCK_SIZE)
            cp.add(count, 1, out=count)

        count.fill(0)
        while_loop(more, step, None, max_iterations=self.steps)
        return history

    def capture(self) -> int:
        """Capture the loop for every FULL key a decode batch can dispatch to (at most
        max_num_seqs tokens); returns how many were captured."""
        from cgraph.cuda.context import capture_phase  # noqa: PLC0415

        engine = self.engine
        # the capture's warm-up and first replay run the loop: with a limit of 0 they run no
        # step, so they leave the metadata and the KV cache as they are
        engine.buffers["loop_limit"].fill(0)
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
