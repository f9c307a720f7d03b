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
