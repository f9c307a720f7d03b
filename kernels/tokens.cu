// Token bookkeeping on the device, so the host never waits for a sampled token.
//
// feed_tokens: input_ids[t] = sampled[source[t]] for every token whose source is a row of
// the previous step's samples (0 <= source[t] < num_sampled); other tokens keep their id.
// A source outside [0, num_sampled) is ignored, so no input can read out of bounds.
#include "common.cuh"

extern "C" __global__ void feed_tokens(int* __restrict__ input_ids, const int* __restrict__ source,
                                       const int* __restrict__ sampled, int n, int num_sampled) {
    CG_PDL_ENTRY();
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    const int s = source[t];
    if (s >= 0 && s < num_sampled) input_ids[t] = sampled[s];
}

// publish_tokens: a step's sampled tokens go two ways in one launch: into `sampled` (the
// next step's token feed) and into pinned host memory (`host`, its device address), where
// the host reads them once the step's end event has completed.
extern "C" __global__ void publish_tokens(const int* __restrict__ next_tokens, int* __restrict__ sampled,
                                          int* __restrict__ host, int n) {
    CG_PDL_ENTRY();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int tok = next_tokens[i];
    sampled[i] = tok;
    host[i] = tok;
}

// advance_decode: the metadata of the next decode step of the same sequences, in place:
// each live row i < num_seqs moves one position on (seq_len = position + 1), its slot
// follows from its block table, and its input becomes the token it just sampled. A
// position past the block table is never followed (its KV write is skipped instead).
extern "C" __global__ void advance_decode(int* __restrict__ positions, int* __restrict__ seq_lens,
                                          int* __restrict__ slot_mapping, int* __restrict__ token_source,
                                          const int* __restrict__ block_tables, const int* __restrict__ num_seqs,
                                          int rows, int max_blocks, int block_size) {
    CG_PDL_ENTRY();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows || i >= num_seqs[0]) return;
    const int p = positions[i] + 1;
    const int b = p / block_size;
    positions[i] = p;
    seq_lens[i] = p + 1;
    slot_mapping[i] = (b < max_blocks) ? block_tables[(i64)i * max_blocks + b] * block_size + p % block_size : -1;
    token_source[i] = i;
}

// The bookkeeping of a multi-step decode loop (cgraph.engine.multistep), one launch each,
// one CTA (rows are a decode batch: at most a few thousand).
//
// start_decode_loop, before the loop: count = 0, no row done, pred = (limit > 0).
extern "C" __global__ void start_decode_loop(int* __restrict__ count, int* __restrict__ done,
                                             const int* __restrict__ limit, int* __restrict__ pred, int rows) {
    CG_PDL_ENTRY();
    for (int i = threadIdx.x; i < rows; i += blockDim.x) done[i] = 0;
    if (threadIdx.x == 0) {
        count[0] = 0;
        pred[0] = limit[0] > 0;
    }
}

// decode_loop_step, at the end of each iteration c = count[0]: every row records the token
// it sampled into history[c] (nothing for c outside [0, steps)) and keeps it as its next
// input (sampled); each live row i < num_seqs advances its metadata as advance_decode does
// and is done once it has sampled one of its stop ids (stop_ids[i, :], -1 for none);
// then count = c + 1 and pred = (c + 1 < limit) and some live row is not done.
extern "C" __global__ void decode_loop_step(int* __restrict__ history, const int* __restrict__ next_tokens,
                                            int* __restrict__ sampled, int* __restrict__ positions,
                                            int* __restrict__ seq_lens, int* __restrict__ slot_mapping,
                                            int* __restrict__ token_source, const int* __restrict__ block_tables,
                                            const int* __restrict__ num_seqs, const int* __restrict__ stop_ids,
                                            int* __restrict__ done, int* __restrict__ count,
                                            const int* __restrict__ limit, int* __restrict__ pred,
                                            int rows, int steps, int max_blocks, int block_size, int max_stop) {
    CG_PDL_ENTRY();
    const int c = count[0];
    const int live_rows = min(rows, num_seqs[0]);
    int running = 0;
    for (int i = threadIdx.x; i < rows; i += blockDim.x) {
        const int tok = next_tokens[i];
        if (c >= 0 && c < steps) history[(i64)c * rows + i] = tok;
        sampled[i] = tok;
        if (i < live_rows) {
            const int p = positions[i] + 1;
            const int b = p / block_size;
            positions[i] = p;
            seq_lens[i] = p + 1;
            slot_mapping[i] = (b < max_blocks) ? block_tables[(i64)i * max_blocks + b] * block_size + p % block_size
                                               : -1;
            token_source[i] = i;
            int d = done[i];
            for (int s = 0; s < max_stop; ++s) d |= (stop_ids[(i64)i * max_stop + s] == tok);
            done[i] = d;
            running |= !d;
        }
    }
    running = __syncthreads_or(running);  // every thread has read count[0] before it is written
    if (threadIdx.x == 0) {
        count[0] = c + 1;
        pred[0] = (c + 1 < limit[0]) && running;
    }
}
