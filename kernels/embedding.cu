// Embedding gather: out[t, :] = table[ids[t], :]; an id outside [0, V) gives a zero row
// (padding rows of a captured batch carry arbitrary ids).
#include "common.cuh"

template <class D, int V>
__device__ __forceinline__ void embedding_body(typename D::T* __restrict__ out, const int* __restrict__ ids,
                                               const typename D::T* __restrict__ table, int vocab, int H) {
  typedef typename D::T T;
  const int t = blockIdx.x;  // rows on x: gridDim.y is limited to 65535
  const int i = (blockIdx.y * blockDim.x + threadIdx.x) * V;
  if (i >= H) return;
  const int id = ids[t];
  T* dst = out + (i64)t * H + i;
  if (id < 0 || id >= vocab) {
    float z[V];
#pragma unroll
    for (int j = 0; j < V; ++j) z[j] = 0.f;
    store_f<D, V>(dst, z);
    return;
  }
  const T* src = table + (i64)id * H + i;
  if (V * sizeof(T) == 16) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) dst[j] = src[j];
  }
}

#define EMB(NAME, TAG, V)                                                                         \
  extern "C" __global__ void NAME(TAG::T* out, const int* ids, const TAG::T* table, int vocab, int H) { \
    CG_PDL_ENTRY();                                                                                     \
    embedding_body<TAG, V>(out, ids, table, vocab, H);                                            \
  }
EMB(embedding_f16_v8, F16, 8)
EMB(embedding_f16_v1, F16, 1)
EMB(embedding_bf16_v8, BF16, 8)
EMB(embedding_bf16_v1, BF16, 1)
EMB(embedding_f32_v4, F32, 4)
EMB(embedding_f32_v1, F32, 1)
