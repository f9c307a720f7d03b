// Attention over a paged KV cache (decode and chunked prefill) and over contiguous varlen
// sequences (prefill / vision encoder), one kernel family.
//
// One block per (query row t, group of GB query heads sharing one KV head): K/V are read
// once per GQA group. Inside the block, lanes form groups of TG lanes; a group owns one key
// at a time and each lane owns 16 bytes of the head dimension. Every group keeps an online
// softmax (running max, sum, weighted V); groups are merged through shuffles, then warps
// through shared memory.
//
// mode 0: paged decode (row t is sequence t); 1: paged, any query lengths (sequence found by
// binary search over query_start_loc); 2: varlen over cu_seqlens (causal or not).
// Padding rows (t >= query_start_loc[num_seqs] or t >= cu_seqlens[n]) and rows that see no
// key are written as zeros.
#include "common.cuh"

__device__ __forceinline__ int find_segment(const int* __restrict__ starts, int n, int t) {
  // largest s in [0, n) with starts[s] <= t
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (starts[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__device__ __forceinline__ uint4 ld_nc16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

template <class D>
__device__ __forceinline__ void unpack16(const uint4& v, float* out) {
  union { uint4 v; typename D::T e[16 / sizeof(typename D::T)]; } u;
  u.v = v;
#pragma unroll
  for (int i = 0; i < 16 / (int)sizeof(typename D::T); ++i) out[i] = D::to_f(u.e[i]);
}

template <class D, int TG, int GB>
__device__ __forceinline__ void attention_body(
    typename D::T* __restrict__ out, const typename D::T* __restrict__ q,
    const typename D::T* __restrict__ kb, const typename D::T* __restrict__ vb,
    const int* __restrict__ block_tables, int max_blocks, int block_size,
    const int* __restrict__ seq_lens, const int* __restrict__ qsl, const int* __restrict__ num_seqs_ptr,
    const int* __restrict__ cu_seqlens, int n_varlen, int mode, int causal, int Hq, int Hkv, int Dh,
    i64 q_stride, i64 k_stride, i64 v_stride, float scale) {
  typedef typename D::T T;
  constexpr int VE = Vec16<D>::N;
  constexpr int KPW = 32 / TG;
  constexpr int NW = (GB * TG <= 128) ? 8 : 4;  // keeps the merge buffer at 32 KB
  constexpr int NG = NW * KPW;
  __shared__ float sm_m[NW][GB];
  __shared__ float sm_l[NW][GB];
  __shared__ float sm_acc[NW][GB][TG * VE];
  const float NEG_INF = -__int_as_float(0x7f800000);

  const int t = blockIdx.x;
  const int h0 = blockIdx.y * GB;
  const int kvh = h0 / (Hq / Hkv);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gi = lane / TG, li = lane % TG;
  const int d0 = li * VE;
  const bool dact = d0 < Dh;
  T* orow = out + (i64)t * Hq * Dh + (i64)h0 * Dh;

  int s = 0, n_keys = 0;
  i64 kv_start = 0;
  if (mode == 2) {
    if (t < cu_seqlens[n_varlen]) {
      s = find_segment(cu_seqlens, n_varlen, t);
      const int start = cu_seqlens[s];
      n_keys = causal ? (t - start + 1) : (cu_seqlens[s + 1] - start);
      kv_start = start;
    }
  } else {
    const int ns = *num_seqs_ptr;
    if (ns > 0 && t < qsl[ns]) {
      s = (mode == 0) ? t : find_segment(qsl, ns, t);
      const int q_len = qsl[s + 1] - qsl[s];
      n_keys = seq_lens[s] - q_len + (t - qsl[s]) + 1;
      n_keys = min(n_keys, max_blocks * block_size);
    }
  }
  if (n_keys <= 0) {
    for (int i = threadIdx.x; i < GB * Dh; i += blockDim.x) orow[i] = D::from_f(0.f);
    return;
  }

  float qf[GB][VE];
#pragma unroll
  for (int g = 0; g < GB; ++g) {
    if (dact) {
      load_f<D, VE>(q + (i64)t * q_stride + (i64)(h0 + g) * Dh + d0, qf[g]);
#pragma unroll
      for (int e = 0; e < VE; ++e) qf[g][e] *= scale;
    } else {
#pragma unroll
      for (int e = 0; e < VE; ++e) qf[g][e] = 0.f;
    }
  }
  float m[GB], l[GB], acc[GB][VE];
#pragma unroll
  for (int g = 0; g < GB; ++g) {
    m[g] = NEG_INF;
    l[g] = 0.f;
#pragma unroll
    for (int e = 0; e < VE; ++e) acc[g][e] = 0.f;
  }
  const int* bt = block_tables + (i64)s * max_blocks;
  const i64 head_off = (i64)kvh * Dh + d0;

  constexpr int U = 4;  // keys per group per iteration: 2*U 16-byte loads in flight per lane
  for (int base = warp * KPW; base < n_keys; base += U * NG) {
    uint4 kr[U], vr[U];
    bool ok[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int key = base + u * NG + gi;
      ok[u] = key < n_keys;
      kr[u] = make_uint4(0, 0, 0, 0);
      vr[u] = make_uint4(0, 0, 0, 0);
      if (ok[u] && dact) {
        const i64 r = (mode == 2) ? kv_start + key : (i64)bt[key / block_size] * block_size + key % block_size;
        kr[u] = ld_nc16(kb + r * k_stride + head_off);
        vr[u] = ld_nc16(vb + r * v_stride + head_off);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[VE], vf[VE];
      unpack16<D>(kr[u], kf);
      unpack16<D>(vr[u], vf);
#pragma unroll
      for (int g = 0; g < GB; ++g) {
        float sc = 0.f;
#pragma unroll
        for (int e = 0; e < VE; ++e) sc += qf[g][e] * kf[e];
#pragma unroll
        for (int o = TG / 2; o > 0; o >>= 1) sc += __shfl_xor_sync(0xffffffffu, sc, o);
        if (ok[u]) {
          const float mn = fmaxf(m[g], sc), a = __expf(m[g] - mn), p = __expf(sc - mn);
          l[g] = l[g] * a + p;
#pragma unroll
          for (int e = 0; e < VE; ++e) acc[g][e] = acc[g][e] * a + p * vf[e];
          m[g] = mn;
        }
      }
    }
  }

  // merge the key groups of a warp
#pragma unroll
  for (int o = TG; o < 32; o <<= 1) {
#pragma unroll
    for (int g = 0; g < GB; ++g) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m[g], o);
      const float l2 = __shfl_xor_sync(0xffffffffu, l[g], o);
      const float mn = fmaxf(m[g], m2);
      const float a1 = (m[g] == NEG_INF) ? 0.f : __expf(m[g] - mn);
      const float a2 = (m2 == NEG_INF) ? 0.f : __expf(m2 - mn);
      l[g] = l[g] * a1 + l2 * a2;
#pragma unroll
      for (int e = 0; e < VE; ++e) {
        const float x2 = __shfl_xor_sync(0xffffffffu, acc[g][e], o);
        acc[g][e] = acc[g][e] * a1 + x2 * a2;
      }
      m[g] = mn;
    }
  }
  if (lane < TG) {
#pragma unroll
    for (int g = 0; g < GB; ++g) {
      if (li == 0) { sm_m[warp][g] = m[g]; sm_l[warp][g] = l[g]; }
#pragma unroll
      for (int e = 0; e < VE; ++e) sm_acc[warp][g][d0 + e] = acc[g][e];
    }
  }
  __syncthreads();
  // merge the warps
  for (int i = threadIdx.x; i < GB * Dh; i += blockDim.x) {
    const int g = i / Dh, d = i - g * Dh;
    float mx = NEG_INF;
#pragma unroll
    for (int w = 0; w < NW; ++w) mx = fmaxf(mx, sm_m[w][g]);
    float L = 0.f, A = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      const float mw = sm_m[w][g];
      if (mw == NEG_INF) continue;
      const float a = __expf(mw - mx);
      L += sm_l[w][g] * a;
      A += sm_acc[w][g][d] * a;
    }
    orow[i] = D::from_f(L > 0.f ? A / L : 0.f);
  }
}

#define ATTN(NAME, TAG, TG, GB)                                                                     \
  extern "C" __global__ void __launch_bounds__(256) NAME(                                           \
      TAG::T* out, const TAG::T* q, const TAG::T* kb, const TAG::T* vb, const int* block_tables,    \
      int max_blocks, int block_size, const int* seq_lens, const int* qsl, const int* num_seqs_ptr, \
      const int* cu_seqlens, int n_varlen, int mode, int causal, int Hq, int Hkv, int Dh,           \
      i64 q_stride, i64 k_stride, i64 v_stride, float scale) {                                      \
    attention_body<TAG, TG, GB>(out, q, kb, vb, block_tables, max_blocks, block_size, seq_lens,     \
                                qsl, num_seqs_ptr, cu_seqlens, n_varlen, mode, causal, Hq, Hkv, Dh, \
                                q_stride, k_stride, v_stride, scale);                               \
  }
#define ATTN_TG(TAG, DT, TG) \
  ATTN(attention_##DT##_tg##TG##_gb1, TAG, TG, 1) \
  ATTN(attention_##DT##_tg##TG##_gb2, TAG, TG, 2) \
  ATTN(attention_##DT##_tg##TG##_gb4, TAG, TG, 4) \
  ATTN(attention_##DT##_tg##TG##_gb8, TAG, TG, 8)
ATTN_TG(F16, f16, 8)
ATTN_TG(F16, f16, 16)
ATTN_TG(F16, f16, 32)
ATTN_TG(BF16, bf16, 8)
ATTN_TG(BF16, bf16, 16)
ATTN_TG(BF16, bf16, 32)
