// Token bookkeeping on the device, so the host never waits for a sampled token.
//
// feed_tokens: input_ids[t] = sampled[source[t]] for every token whose source is a row of
// the previous step's samples (0 <= source[t] < num_sampled); other tokens keep their id.
// A source outside [0, num_sampled) is ignored, so no input can read out of bounds.
#include "common.cuh"

extern "C" __global__ void feed_tokens(int* __restrict__ input_ids, const int* __restrict__ source,
                                       const int* __restrict__ sampled, int n, int num_sampled) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    const int s = source[t];
    if (s >= 0 && s < num_sampled) input_ids[t] = sampled[s];
}

// advance_decode: the metadata of the next decode step of the same sequences, in place:
// each live row i < num_seqs moves one position on (seq_len = position + 1), its slot
// follows from its block table, and its input becomes the token it just sampled. A
// position past the block table is never followed (its KV write is skipped instead).
extern "C" __global__ void advance_decode(int* __restrict__ positions, int* __restrict__ seq_lens,
                                          int* __restrict__ slot_mapping, int* __restrict__ token_source,
                                          const int* __restrict__ block_tables, const int* __restrict__ num_seqs,
                                          int rows, int max_blocks, int block_size) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows || i >= num_seqs[0]) return;
    const int p = positions[i] + 1;
    const int b = p / block_size;
    positions[i] = p;
    seq_lens[i] = p + 1;
    slot_mapping[i] = (b < max_blocks) ? block_tables[(i64)i * max_blocks + b] * block_size + p % block_size : -1;
    token_source[i] = i;
}

// record_step_tokens: history[step[0] * rows + i] = sampled[i] for i < rows, where step[0]
// is an iteration counter on the device (a step of a multi-step decode loop); a step
// outside [0, steps) records nothing.
extern "C" __global__ void record_step_tokens(int* __restrict__ history, const int* __restrict__ sampled,
                                              const int* __restrict__ step, int rows, int steps) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int s = step[0];
    if (i >= rows || s < 0 || s >= steps) return;
    history[(i64)s * rows + i] = sampled[i];
}
