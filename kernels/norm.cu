// RMSNorm, optionally fused with the residual add:
//   without residual: out = x * rsqrt(mean(x^2) + eps) * w
//   with residual:    residual <- round(x + residual) (in place); out = norm(residual) * w
// One block per row; up to 4 chunks per thread stay in registers between the sum of squares
// and the scaling pass; longer rows re-read the rest (L1/L2 resident).
#include "common.cuh"

template <class D, int V>
__device__ __forceinline__ void rms_norm_body(typename D::T* out, const typename D::T* x,
                                              typename D::T* residual, const typename D::T* __restrict__ w,
                                              int H, float eps, int has_residual) {
  typedef typename D::T T;
  // 16-byte chunks (up to NCH per thread) stay in registers, packed, between the two passes
  constexpr int NCH = (V * sizeof(T) == 16) ? 4 : 0;
  __shared__ float red[32];
  const i64 row = blockIdx.x;
  const T* xr = x + row * H;
  T* rr = residual + row * H;
  T* orow = out + row * H;
  const int stride = blockDim.x * V;
  uint4 keep[NCH > 0 ? NCH : 1];
  float ss = 0.f;
#pragma unroll
  for (int c = 0; c < NCH; ++c) {
    const int i = c * stride + threadIdx.x * V;
    if (i < H) {
      float a[V];
      keep[c] = *reinterpret_cast<const uint4*>(xr + i);
      if (has_residual) {
        float b[V];
        unpack_vec<D, V>(keep[c], a);
        load_f<D, V>(rr + i, b);
#pragma unroll
        for (int j = 0; j < V; ++j) a[j] += b[j];
        keep[c] = pack_vec<D, V>(a);  // rounded to the storage dtype, as stored
        *reinterpret_cast<uint4*>(rr + i) = keep[c];
      }
      unpack_vec<D, V>(keep[c], a);
#pragma unroll
      for (int j = 0; j < V; ++j) ss += a[j] * a[j];
    }
  }
  for (int i = NCH * stride + threadIdx.x * V; i < H; i += stride) {  // beyond the register cache
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
#pragma unroll
  for (int c = 0; c < NCH; ++c) {
    const int i = c * stride + threadIdx.x * V;
    if (i < H) {
      float a[V], g[V];
      unpack_vec<D, V>(keep[c], a);
      load_f<D, V>(w + i, g);
#pragma unroll
      for (int j = 0; j < V; ++j) a[j] = a[j] * inv * g[j];
      store_f<D, V>(orow + i, a);
    }
  }
  const T* src = has_residual ? rr : xr;
  for (int i = NCH * stride + threadIdx.x * V; i < H; i += stride) {
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
    CG_PDL_ENTRY();                                                                            \
    rms_norm_body<TAG, V>(out, x, residual, w, H, eps, has_residual);                          \
  }
RMS(rms_norm_f16_v8, F16, 8)
RMS(rms_norm_f16_v1, F16, 1)
RMS(rms_norm_bf16_v8, BF16, 8)
RMS(rms_norm_bf16_v1, BF16, 1)
RMS(rms_norm_f32_v4, F32, 4)
RMS(rms_norm_f32_v1, F32, 1)
