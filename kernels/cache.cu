// KV-cache write: copy token t's k/v rows [Hkv*D] into slot slot_mapping[t] of the paged
// caches [num_blocks, block_size, Hkv, D] (slot = block * block_size + offset).
// A slot < 0 (padding) or past the cache is skipped.
#include "common.cuh"

template <class D, int V>
__device__ __forceinline__ void reshape_and_cache_body(const typename D::T* __restrict__ k,
                                                       const typename D::T* __restrict__ v,
                                                       typename D::T* __restrict__ kc,
                                                       typename D::T* __restrict__ vc,
                                                       const int* __restrict__ slots, int row,
                                                       i64 k_stride, i64 v_stride, i64 num_slots) {
  typedef typename D::T T;
  const i64 t = blockIdx.x;
  const i64 slot = slots[t];
  if (slot < 0 || slot >= num_slots) return;
  const T* ks = k + t * k_stride;
  const T* vs = v + t * v_stride;
  T* kd = kc + slot * row;
  T* vd = vc + slot * row;
  for (int i = threadIdx.x * V; i < row; i += blockDim.x * V) {
    if (V * sizeof(T) == 16) {
      const uint4 a = *reinterpret_cast<const uint4*>(ks + i);
      const uint4 b = *reinterpret_cast<const uint4*>(vs + i);
      *reinterpret_cast<uint4*>(kd + i) = a;
      *reinterpret_cast<uint4*>(vd + i) = b;
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) { kd[i + j] = ks[i + j]; vd[i + j] = vs[i + j]; }
    }
  }
}

#define RAC(NAME, TAG, V)                                                                              \
  extern "C" __global__ void NAME(const TAG::T* k, const TAG::T* v, TAG::T* kc, TAG::T* vc,            \
                                  const int* slots, int row, i64 k_stride, i64 v_stride, i64 num_slots) { \
    CG_PDL_ENTRY();                                                                                       \
    reshape_and_cache_body<TAG, V>(k, v, kc, vc, slots, row, k_stride, v_stride, num_slots);           \
  }
RAC(reshape_and_cache_f16_v8, F16, 8)
RAC(reshape_and_cache_f16_v1, F16, 1)
RAC(reshape_and_cache_bf16_v8, BF16, 8)
RAC(reshape_and_cache_bf16_v1, BF16, 1)
RAC(reshape_and_cache_f32_v4, F32, 4)
RAC(reshape_and_cache_f32_v1, F32, 1)
