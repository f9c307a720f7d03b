// Graph-safe random numbers (cgraph.kernels.random.Generator). A generator's state lives in
// device memory, four u32 words: [key lo, key hi, offset lo, offset hi]. A draw of n values
// reads the offset on the device, so a replayed graph draws from wherever the stream is
// now: value i comes from counter block (offset + i / 4) (counter words [block lo, block hi,
// 0, 0]), word i % 4. The launch after it, philox_advance, moves the offset past the blocks
// the draw used; it runs once the draw's grid has completed (stream order), so a draw never
// sees its own advance.
#include "common.cuh"
#include "philox.cuh"

__device__ __forceinline__ Philox4 philox_block(const u32* state, unsigned long long rel) {
  const unsigned long long b = ((unsigned long long)state[2] | ((unsigned long long)state[3] << 32)) + rel;
  return philox4x32_10((u32)b, (u32)(b >> 32), 0u, 0u, state[0], state[1]);
}

// out[i] = f(the i-th 32-bit word of the stream at the state's offset), i < n: one thread per
// counter block of four words.
struct PhiloxWord { __device__ u32 operator()(u32 w) const { return w; } };
struct PhiloxUnit { __device__ float operator()(u32 w) const { return philox_unit_float(w); } };
template <class T, class F>
__device__ __forceinline__ void philox_fill(const u32* __restrict__ state, T* __restrict__ out, int n, F f) {
  const i64 blk = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (blk * 4 >= n) return;
  const Philox4 r = philox_block(state, (unsigned long long)blk);
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (blk * 4 + j < n) out[blk * 4 + j] = f(r.w[j]);
}

// the words themselves
extern "C" __global__ void philox_bits(const u32* __restrict__ state, u32* __restrict__ out, int n) {
  CG_PDL_ENTRY();
  philox_fill(state, out, n, PhiloxWord());
}

// philox_unit_float of each word: uniform in [0, 1)
extern "C" __global__ void philox_uniform(const u32* __restrict__ state, float* __restrict__ out, int n) {
  CG_PDL_ENTRY();
  philox_fill(state, out, n, PhiloxUnit());
}

// The offset moves on by `blocks` counter blocks (64-bit, wrapping). One thread.
extern "C" __global__ void philox_advance(u32* __restrict__ state, unsigned long long blocks) {
  CG_PDL_ENTRY();
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  const unsigned long long b = ((unsigned long long)state[2] | ((unsigned long long)state[3] << 32)) + blocks;
  state[2] = (u32)b;
  state[3] = (u32)(b >> 32);
}
