// SiLU-and-mul: x [T, 2I] -> out [T, I], out = silu(x[:, :I]) * x[:, I:], in fp32.
#include "common.cuh"

template <class D, int V>
__device__ __forceinline__ void silu_and_mul_body(typename D::T* __restrict__ out,
                                                  const typename D::T* __restrict__ x, int I) {
  const i64 t = blockIdx.x;  // rows on x: gridDim.y is limited to 65535
  const int i = (blockIdx.y * blockDim.x + threadIdx.x) * V;
  if (i >= I) return;
  float a[V], b[V];
  load_f<D, V>(x + t * 2 * I + i, a);
  load_f<D, V>(x + t * 2 * I + I + i, b);
#pragma unroll
  for (int j = 0; j < V; ++j) a[j] = a[j] / (1.f + __expf(-a[j])) * b[j];
  store_f<D, V>(out + t * I + i, a);
}

#define SILU(NAME, TAG, V)                                                   \
  extern "C" __global__ void NAME(TAG::T* out, const TAG::T* x, int I) {     \
    CG_PDL_ENTRY();                                                          \
    silu_and_mul_body<TAG, V>(out, x, I);                                    \
  }
SILU(silu_and_mul_f16_v8, F16, 8)
SILU(silu_and_mul_f16_v1, F16, 1)
SILU(silu_and_mul_bf16_v8, BF16, 8)
SILU(silu_and_mul_bf16_v1, BF16, 1)
SILU(silu_and_mul_f32_v4, F32, 4)
SILU(silu_and_mul_f32_v1, F32, 1)
