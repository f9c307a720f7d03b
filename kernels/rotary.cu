// Rotary embedding, neox style, in place on q [T, Hq*D] and k [T, Hk*D] (rows may be
// strided, e.g. views into a fused qkv buffer). cache fp32 [max_pos, D] = [cos | sin].
// For pair (x1 = x[i], x2 = x[i + D/2]): x1' = x1*cos - x2*sin, x2' = x2*cos + x1*sin.
// A position outside [0, max_pos) leaves the row untouched (padding rows).
#include "common.cuh"

// One rotation of V pairs (x1[j], x2[j]) = (x[c + j], x[c + j + D/2]) by the angles at cs.
template <int V>
__device__ __forceinline__ void rope_rotate(float* x1, float* x2, const float* __restrict__ cs, int c, int half) {
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const float co = cs[c + j], si = cs[half + c + j];
    const float a = x1[j], b = x2[j];
    x1[j] = a * co - b * si;
    x2[j] = b * co + a * si;
  }
}

template <class D, int V>
__device__ __forceinline__ void rotary_body(const int* __restrict__ positions, typename D::T* q,
                                            typename D::T* k, const float* __restrict__ cache,
                                            int nq, int nk, int head, i64 q_stride, i64 k_stride,
                                            int max_pos) {
  typedef typename D::T T;
  const i64 t = blockIdx.x;
  const int p = positions[t];
  if (p < 0 || p >= max_pos) return;
  const int half = head / 2;
  const int chunks = half / V;
  const float* cs = cache + (i64)p * head;
  const int total = (nq + nk) * chunks;
  for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
    const int h = idx / chunks;
    const int c = (idx - h * chunks) * V;
    T* base = h < nq ? q + t * q_stride + (i64)h * head : k + t * k_stride + (i64)(h - nq) * head;
    float x1[V], x2[V];
    load_f<D, V>(base + c, x1);
    load_f<D, V>(base + half + c, x2);
    rope_rotate<V>(x1, x2, cs, c, half);
    store_f<D, V>(base + c, x1);
    store_f<D, V>(base + half + c, x2);
  }
}

#define ROT(NAME, TAG, V)                                                                           \
  extern "C" __global__ void NAME(const int* positions, TAG::T* q, TAG::T* k, const float* cache,   \
                                  int nq, int nk, int head, i64 q_stride, i64 k_stride, int max_pos) { \
    CG_PDL_ENTRY();                                                                                    \
    rotary_body<TAG, V>(positions, q, k, cache, nq, nk, head, q_stride, k_stride, max_pos);         \
  }
ROT(rotary_f16_v8, F16, 8)
ROT(rotary_f16_v1, F16, 1)
ROT(rotary_bf16_v8, BF16, 8)
ROT(rotary_bf16_v1, BF16, 1)
ROT(rotary_f32_v4, F32, 4)
ROT(rotary_f32_v1, F32, 1)

// Rotary fused with the KV-cache write: q and k rotated in place as above, and row t's rotated
// k and its v also written into slot slots[t] of the paged caches [num_blocks, block_size,
// Hkv*D] (one pass instead of rotary then reshape_and_cache: the same bits, one launch and one
// read of k fewer). A slot < 0 or past the cache skips the write; a position outside
// [0, max_pos) leaves q and k untouched and writes k as it is.
template <class D, int V>
__device__ __forceinline__ void rotary_cache_body(const int* __restrict__ positions, typename D::T* q,
                                                  typename D::T* k, const typename D::T* __restrict__ v,
                                                  const float* __restrict__ cache, typename D::T* __restrict__ kc,
                                                  typename D::T* __restrict__ vc, const int* __restrict__ slots,
                                                  int nq, int nk, int head, i64 q_stride, i64 k_stride,
                                                  i64 v_stride, int max_pos, i64 num_slots) {
  typedef typename D::T T;
  const i64 t = blockIdx.x;
  const int p = positions[t];
  const bool rotate = p >= 0 && p < max_pos;
  const i64 slot = slots[t];
  const bool store = slot >= 0 && slot < num_slots;
  const int half = head / 2, chunks = half / V, row = nk * head;
  const float* cs = cache + (i64)(rotate ? p : 0) * head;
  const int total = (nq + nk) * chunks;
  for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
    const int h = idx / chunks;
    const int c = (idx - h * chunks) * V;
    const bool is_k = h >= nq;
    if (!rotate && !(is_k && store)) continue;
    T* base = !is_k ? q + t * q_stride + (i64)h * head : k + t * k_stride + (i64)(h - nq) * head;
    float x1[V], x2[V];
    load_f<D, V>(base + c, x1);
    load_f<D, V>(base + half + c, x2);
    if (rotate) {
      rope_rotate<V>(x1, x2, cs, c, half);
      store_f<D, V>(base + c, x1);
      store_f<D, V>(base + half + c, x2);
    }
    if (is_k && store) {
      T* dst = kc + slot * row + (i64)(h - nq) * head;
      store_f<D, V>(dst + c, x1);
      store_f<D, V>(dst + half + c, x2);
    }
  }
  if (!store) return;
  const T* vs = v + t * v_stride;
  T* vd = vc + slot * row;
  for (int i = threadIdx.x * V; i < row; i += blockDim.x * V) {
    float x[V];
    load_f<D, V>(vs + i, x);
    store_f<D, V>(vd + i, x);
  }
}

#define ROT_CACHE(NAME, TAG, V)                                                                      \
  extern "C" __global__ void NAME(const int* positions, TAG::T* q, TAG::T* k, const TAG::T* v,       \
                                  const float* cache, TAG::T* kc, TAG::T* vc, const int* slots, int nq, \
                                  int nk, int head, i64 q_stride, i64 k_stride, i64 v_stride,        \
                                  int max_pos, i64 num_slots) {                                      \
    CG_PDL_ENTRY();                                                                                  \
    rotary_cache_body<TAG, V>(positions, q, k, v, cache, kc, vc, slots, nq, nk, head, q_stride,     \
                              k_stride, v_stride, max_pos, num_slots);                               \
  }
ROT_CACHE(rotary_cache_f16_v8, F16, 8)
ROT_CACHE(rotary_cache_f16_v1, F16, 1)
ROT_CACHE(rotary_cache_bf16_v8, BF16, 8)
ROT_CACHE(rotary_cache_bf16_v1, BF16, 1)
ROT_CACHE(rotary_cache_f32_v4, F32, 4)
ROT_CACHE(rotary_cache_f32_v1, F32, 1)
