// Greedy sampling: out[t] = argmax(logits[t, :]) as int32; ties go to the lowest index
// (numpy's first occurrence). NaN entries are ignored.
#include "common.cuh"

__device__ __forceinline__ void argmax_pick(float& best, int& idx, float v, int i) {
  if (v > best || (v == best && i < idx)) { best = v; idx = i; }
}

template <class D, int V>
__device__ __forceinline__ void argmax_body(const typename D::T* __restrict__ logits, int* __restrict__ out, int n) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const i64 row = blockIdx.x;
  const typename D::T* x = logits + row * n;
  float best = -__int_as_float(0x7f800000);
  int idx = 0x7fffffff;
  for (int i = threadIdx.x * V; i < n; i += blockDim.x * V) {
    float a[V];
    load_f<D, V>(x + i, a);
#pragma unroll
    for (int j = 0; j < V; ++j) argmax_pick(best, idx, a[j], i + j);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float b2 = __shfl_xor_sync(0xffffffffu, best, o);
    const int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
    argmax_pick(best, idx, b2, i2);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  if (lane == 0) { sv[warp] = best; si[warp] = idx; }
  __syncthreads();
  if (warp == 0) {
    best = lane < nw ? sv[lane] : -__int_as_float(0x7f800000);
    idx = lane < nw ? si[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float b2 = __shfl_xor_sync(0xffffffffu, best, o);
      const int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
      argmax_pick(best, idx, b2, i2);
    }
    if (lane == 0) out[row] = idx == 0x7fffffff ? 0 : idx;
  }
}

#define ARGMAX(NAME, TAG, V)                                                          \
  extern "C" __global__ void NAME(const TAG::T* logits, int* out, int n) {            \
    CG_PDL_ENTRY();                                                                   \
    argmax_body<TAG, V>(logits, out, n);                                              \
  }
ARGMAX(argmax_f16_v8, F16, 8)
ARGMAX(argmax_f16_v1, F16, 1)
ARGMAX(argmax_bf16_v8, BF16, 8)
ARGMAX(argmax_bf16_v1, BF16, 1)
ARGMAX(argmax_f32_v4, F32, 4)
ARGMAX(argmax_f32_v1, F32, 1)
