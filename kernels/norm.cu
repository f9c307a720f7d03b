// RMSNorm, optionally fused with the residual add:
//   without residual: out = x * rsqrt(mean(x^2) + eps) * w
//   with residual:    residual <- round(x + residual) (in place); out = norm(residual) * w
// One block per row; the second pass re-reads the row (L1/L2 resident) instead of keeping
// it in registers, so any hidden size works with one kernel.
#include "common.cuh"

template <class D, int V>
__device__ __forceinline__ void rms_norm_body(typename D::T* out, const typename D::T* x,
                                              typename D::T* residual, const typename D::T* __restrict__ w,
                                              int H, float eps, int has_residual) {
  typedef typename D::T T;
  __shared__ float red[32];
  const i64 row = blockIdx.x;
  const T* xr = x + row * H;
  T* rr = residual + row * H;
  T* orow = out + row * H;
  float ss = 0.f;
  for (int i = threadIdx.x * V; i < H; i += blockDim.x * V) {
    float a[V];
    load_f<D, V>(xr + i, a);
    if (has_residual) {
      float b[V];
      load_f<D, V>(rr + i, b);
#pragma unroll
      for (int j = 0; j < V; ++j) a[j] = D::to_f(D::from_f(a[j] + b[j]));
      store_f<D, V>(rr + i, a);
    }
#pragma unroll
    for (int j = 0; j < V; ++j) ss += a[j] * a[j];
  }
  ss = block_sum(ss, red);
  const float inv = rsqrtf(ss / (float)H + eps);
  const T* src = has_residual ? rr : xr;
  for (int i = threadIdx.x * V; i < H; i += blockDim.x * V) {
    float a[V], g[V];
    load_f<D, V>(src + i, a);
    load_f<D, V>(w + i, g);
#pragma unroll
    for (int j = 0; j < V; ++j) a[j] = a[j] * inv * g[j];
    store_f<D, V>(orow + i, a);
  }
}

#define RMS(NAME, TAG, V)                                                                      \
  extern "C" __global__ void NAME(TAG::T* out, const TAG::T* x, TAG::T* residual, const TAG::T* w, \
                                  int H, float eps, int has_residual) {                        \
    rms_norm_body<TAG, V>(out, x, residual, w, H, eps, has_residual);                          \
  }
RMS(rms_norm_f16_v8, F16, 8)
RMS(rms_norm_f16_v1, F16, 1)
RMS(rms_norm_bf16_v8, BF16, 8)
RMS(rms_norm_bf16_v1, BF16, 1)
RMS(rms_norm_f32_v4, F32, 4)
RMS(rms_norm_f32_v1, F32, 1)
