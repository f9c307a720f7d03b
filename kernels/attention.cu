// Attention over a paged KV cache (decode and chunked prefill) and over contiguous varlen
// sequences (prefill / vision encoder), one kernel family. Head sizes 64 and 128 run the
// tensor-core kernels further down (flash_*: FA2 prefill; flash_decode_*: split-KV decode);
// the CUDA-core kernel right below is the fallback for every other head size. With the
// tensor-core kernels a paged launch of any query lengths is two launches: the prefill kernel
// skips one-query sequences and the decode kernel (mixed=1) serves exactly those, so a decode
// row gets the same bits in a decode step and in a mixed step, padded or not.
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
    CG_PDL_ENTRY();                                                                                 \
    attention_body<TAG, TG, GB>(out, q, kb, vb, block_tables, max_blocks, block_size, seq_lens,     \
                                qsl, num_seqs_ptr, cu_seqlens, n_varlen, mode, causal, Hq, Hkv, Dh, \
                                q_stride, k_stride, v_stride, scale);                               \
  }
#define ATTN_TG(TAG, DT, TG) \
  ATTN(attention_##DT##_tg##TG##_gb1, TAG, TG, 1) \
  ATTN(attention_##DT##_tg##TG##_gb2, TAG, TG, 2) \
  ATTN(attention_##DT##_tg##TG##_gb4, TAG, TG, 4) \
  ATTN(attention_##DT##_tg##TG##_gb8, TAG, TG, 8)
// Parts 0-5: one per (dtype, TG).
#if CG_IN_PART(0)
ATTN_TG(F16, f16, 8)
#endif
#if CG_IN_PART(1)
ATTN_TG(F16, f16, 16)
#endif
#if CG_IN_PART(2)
ATTN_TG(F16, f16, 32)
#endif
#if CG_IN_PART(3)
ATTN_TG(BF16, bf16, 8)
#endif
#if CG_IN_PART(4)
ATTN_TG(BF16, bf16, 16)
#endif
#if CG_IN_PART(5)
ATTN_TG(BF16, bf16, 32)
#endif

// ============================================================================================
// Tensor-core flash attention (sm_80+: cp.async, ldmatrix, mma.sync m16n8k16, fp32 accumulate)
// for head sizes 64 and 128. Shared-memory tiles are [rows][DH] halves whose 16-byte chunks are
// XOR-swizzled by (row & 7), so the 8 row addresses of every ldmatrix hit distinct banks.
// ============================================================================================
__device__ __forceinline__ u32 fa_smem(const void* p) {
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}
__device__ __forceinline__ void fa_cp16(u32 dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void fa_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void fa_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }
__device__ __forceinline__ void fa_ldm4(u32* r, u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void fa_ldm4t(u32* r, u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
// byte offset of chunk c (8 halves) of row r in a swizzled [rows][DH] tile
template <int DH> __device__ __forceinline__ u32 fa_swz(int r, int c) {
  return (u32)(r * (DH * 2) + ((c ^ (r & 7)) << 4));
}

template <class D> struct FaMma;
template <> struct FaMma<F16> {
  static __device__ __forceinline__ void run(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ u32 pack(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
  }
};
template <> struct FaMma<BF16> {
  static __device__ __forceinline__ void run(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ u32 pack(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
  }
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FA_HAS_CLUSTER 1
#define FA_CLUSTER_X(S) __cluster_dims__(S, 1, 1)
#else
#define FA_HAS_CLUSTER 0
#define FA_CLUSTER_X(S)
#endif
__device__ __forceinline__ void fa_cluster_sync() {
#if FA_HAS_CLUSTER
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
// fp32 at a shared address of CTA `rank` of the cluster (own CTA when NS == 1)
template <int NS>
__device__ __forceinline__ float fa_ld_cluster(u32 addr, int rank) {
  float v;
#if FA_HAS_CLUSTER
  if (NS == 1) {
    asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
    return v;
  }
  u32 remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(addr), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
#else
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
#endif
  return v;
}

// Row of the K/V source holding key `key` of segment `s` (mode 1: paged, 2: contiguous).
__device__ __forceinline__ i64 fa_kv_row(int mode, const int* __restrict__ bt, int block_size, i64 kv_base, int key) {
  return (mode == 2) ? kv_base + key : (i64)bt[key / block_size] * block_size + key % block_size;
}

// Issue cp.async for one 64-key K and V tile of KH consecutive heads (keys key0.. of the
// segment; the KH heads of a key are contiguous in memory, so a key is one run of KH*DH*2
// bytes; head hh lands in tile hh, 64*DH*2 bytes apart). Keys >= kend are zero-filled and
// their block-table entries are never read.
template <int DH, int NT, int KH = 1, int ROWS = 64>
__device__ __forceinline__ void fa_load_kv(u32 sk, u32 sv, const u16* __restrict__ kb, const u16* __restrict__ vb,
                                           int mode, const int* __restrict__ bt, int block_size, i64 kv_base,
                                           int key0, int kend, i64 k_stride, i64 v_stride, i64 head_off) {
  constexpr int CH = DH / 8;
  static_assert(ROWS * KH * CH % NT == 0, "whole loads per thread");
#pragma unroll
  for (int it = 0; it < ROWS * KH * CH / NT; ++it) {
    const int i = threadIdx.x + it * NT;
    const int r = i / (KH * CH), cc = i % (KH * CH);
    const u32 so = (u32)((cc / CH) * ROWS * DH * 2) + fa_swz<DH>(r, cc % CH);
    const int key = key0 + r;
    const bool ok = key < kend;
    const i64 row = ok ? fa_kv_row(mode, bt, block_size, kv_base, key) : 0;
    fa_cp16(sk + so, ok ? kb + row * k_stride + head_off + cc * 8 : kb, ok);
    fa_cp16(sv + so, ok ? vb + row * v_stride + head_off + cc * 8 : vb, ok);
  }
}

// Segment s of the launch: query rows [q0, q0+qlen), keys of the last query [0, kvlen), key
// limit of query j = min(off + j + 1, cap) when causal, else min(kvlen, cap).
struct FaSeg { int q0, qlen, off, kvlen; i64 kv_base; };
__device__ __forceinline__ FaSeg fa_segment(int mode, int s, const int* __restrict__ starts,
                                            const int* __restrict__ seq_lens) {
  FaSeg g;
  g.q0 = starts[s];
  g.qlen = starts[s + 1] - g.q0;
  if (mode == 2) { g.kvlen = g.qlen; g.off = 0; g.kv_base = g.q0; }
  else { g.kvlen = seq_lens[s]; g.off = g.kvlen - g.qlen; g.kv_base = 0; }
  return g;
}

// ---------------------------------------------------------------- prefill / varlen (FA2)
// One CTA = 64 query rows of one segment and one query head; 4 warps x 16 rows. The grid's
// x index is mapped onto (segment, tile) by a warp scan over the segments' tile counts (the
// host knows only bounds); indices past the last tile zero the padding rows.
template <class D, int DH>
__device__ __forceinline__ void flash_body(
    u16* __restrict__ out, const u16* __restrict__ q, const u16* __restrict__ kb, const u16* __restrict__ vb,
    const int* __restrict__ block_tables, int max_blocks, int block_size, const int* __restrict__ seq_lens,
    const int* __restrict__ starts, const int* __restrict__ num_seqs_ptr, int n_seg_cap, int mode, int causal,
    int skip_single, int T, int Hq, int Hkv, i64 q_stride, i64 k_stride, i64 v_stride, float scale_log2) {
  constexpr int NT = 128, BM = 64, CH = DH / 8, STAGES = 2;
  extern __shared__ __align__(128) unsigned char fa_smem_raw[];
  unsigned char* sQ = fa_smem_raw;
  unsigned char* sK = sQ + BM * DH * 2;
  unsigned char* sV = sK + STAGES * 64 * DH * 2;
  const float NEG_INF = -__int_as_float(0x7f800000);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int h = blockIdx.y, kvh = h / (Hq / Hkv);

  int nseg = n_seg_cap;
  if (mode == 1) nseg = max(0, min(*num_seqs_ptr, n_seg_cap));
  const int end = nseg > 0 ? starts[nseg] : 0;
  // (segment, tile) of this CTA: every warp scans redundantly (no barrier needed)
  const int b = blockIdx.x;
  int acc = 0, seg = -1, tile = 0, ntiles_seg = 0;
  for (int base = 0; base < nseg; base += 32) {
    const int s = base + lane;
    int cnt = 0;
    if (s < nseg) {
      const int len = starts[s + 1] - starts[s];
      cnt = len > skip_single ? (len + BM - 1) / BM : 0;  // skip_single: the decode kernel owns q_len 1
    }
    int inc = cnt;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, inc, o);
      if (lane >= o) inc += y;
    }
    const int total = __shfl_sync(0xffffffffu, inc, 31);
    if (b < acc + total) {
      const unsigned hit = __ballot_sync(0xffffffffu, acc + inc > b);
      const int L = __ffs(hit) - 1;
      const int excl = __shfl_sync(0xffffffffu, inc - cnt, L);
      ntiles_seg = __shfl_sync(0xffffffffu, cnt, L);
      seg = base + L;
      tile = b - acc - excl;
      break;
    }
    acc += total;
  }
  const i64 orow_stride = (i64)Hq * DH;
  if (seg < 0) {  // padding rows past the last segment: zeros
    const int r0 = end + (b - acc) * BM;
    for (int i = threadIdx.x; i < BM * CH; i += NT) {
      const int r = r0 + i / CH;
      if (r < T) *reinterpret_cast<uint4*>(out + r * orow_stride + (i64)h * DH + (i % CH) * 8) = make_uint4(0, 0, 0, 0);
    }
    return;
  }
  if (causal) tile = ntiles_seg - 1 - tile;  // heaviest tiles first
  const FaSeg g = fa_segment(mode, seg, starts, seq_lens);
  const int cap = (mode == 1) ? max_blocks * block_size : 0x7fffffff;
  const int r0 = tile * BM;
  const int last = min(r0 + BM, g.qlen) - 1;
  auto limit = [&](int j) -> int {
    if (j >= g.qlen) return 0;
    return causal ? min(g.off + j + 1, cap) : min(g.kvlen, cap);
  };
  const int kend = limit(last);
  const int ntk = kend > 0 ? (kend + 63) / 64 : 0;
  const int* bt = block_tables + (i64)(mode == 1 ? seg : 0) * max_blocks;
  const i64 head_off = (i64)kvh * DH;

  // Q tile and the first K/V tiles
  const u32 aQ = fa_smem(sQ), aK = fa_smem(sK), aV = fa_smem(sV);
  for (int i = threadIdx.x; i < BM * CH; i += NT) {
    const int r = i / CH, c = i % CH;
    const bool ok = r0 + r < g.qlen;
    fa_cp16(aQ + fa_swz<DH>(r, c), ok ? q + (i64)(g.q0 + r0 + r) * q_stride + (i64)h * DH + c * 8 : q, ok);
  }
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < ntk)
      fa_load_kv<DH, NT>(aK + st * 64 * DH * 2, aV + st * 64 * DH * 2, kb, vb, mode, bt, block_size, g.kv_base,
                         st * 64, kend, k_stride, v_stride, head_off);
    fa_commit();
  }

  const int gr = lane >> 2, tq = lane & 3;
  const int i0 = r0 + warp * 16 + gr, i1 = i0 + 8;
  const int lim0 = limit(i0), lim1 = limit(i1);
  u32 qf[DH / 16][4];
  float o[DH / 8][4];
#pragma unroll
  for (int j = 0; j < DH / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.f, l1 = 0.f;

  for (int kt = 0; kt < ntk; ++kt) {
    fa_wait<STAGES - 2>();
    __syncthreads();
    {
      const int nx = kt + STAGES - 1;
      if (nx < ntk) {
        const int st = nx % STAGES;
        fa_load_kv<DH, NT>(aK + st * 64 * DH * 2, aV + st * 64 * DH * 2, kb, vb, mode, bt, block_size, g.kv_base,
                           nx * 64, kend, k_stride, v_stride, head_off);
      }
      fa_commit();
    }
    if (kt == 0) {
#pragma unroll
      for (int kk = 0; kk < DH / 16; ++kk)
        fa_ldm4(qf[kk], aQ + fa_swz<DH>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)));
    }
    const int st = kt % STAGES;
    const u32 k_s = aK + st * 64 * DH * 2, v_s = aV + st * 64 * DH * 2;
    float s[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int np = 0; np < 4; ++np) {
#pragma unroll
      for (int kk = 0; kk < DH / 16; ++kk) {
        u32 r[4];
        fa_ldm4(r, k_s + fa_swz<DH>(np * 16 + ((lane >> 4) << 3) + (lane & 7), kk * 2 + ((lane >> 3) & 1)));
        FaMma<D>::run(s[2 * np], qf[kk], r[0], r[1]);
        FaMma<D>::run(s[2 * np + 1], qf[kk], r[2], r[3]);
      }
    }
    // scale, mask, online softmax (rows i0 and i1; a row's 64 keys live in 4 lanes of a quad)
    const int kbase = kt * 64 + 2 * tq;
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int k0 = kbase + j * 8;
      s[j][0] = (k0 < lim0) ? s[j][0] * scale_log2 : NEG_INF;
      s[j][1] = (k0 + 1 < lim0) ? s[j][1] * scale_log2 : NEG_INF;
      s[j][2] = (k0 < lim1) ? s[j][2] * scale_log2 : NEG_INF;
      s[j][3] = (k0 + 1 < lim1) ? s[j][3] * scale_log2 : NEG_INF;
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float b0 = (mx0 == NEG_INF) ? 0.f : mx0, b1 = (mx1 == NEG_INF) ? 0.f : mx1;
    const float a0 = exp2f(m0 - b0), a1 = exp2f(m1 - b1);
    m0 = mx0;
    m1 = mx1;
    float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s[j][0] = exp2f(s[j][0] - b0);
      s[j][1] = exp2f(s[j][1] - b0);
      s[j][2] = exp2f(s[j][2] - b1);
      s[j][3] = exp2f(s[j][3] - b1);
      ps0 += s[j][0] + s[j][1];
      ps1 += s[j][2] + s[j][3];
    }
    l0 = l0 * a0 + ps0;
    l1 = l1 * a1 + ps1;
#pragma unroll
    for (int j = 0; j < DH / 8; ++j) {
      o[j][0] *= a0; o[j][1] *= a0; o[j][2] *= a1; o[j][3] *= a1;
    }
    // O += P V
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      u32 pa[4];
      pa[0] = FaMma<D>::pack(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = FaMma<D>::pack(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = FaMma<D>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = FaMma<D>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < DH / 16; ++dp) {
        u32 r[4];
        fa_ldm4t(r, v_s + fa_swz<DH>(kk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7), dp * 2 + (lane >> 4)));
        FaMma<D>::run(o[2 * dp], pa, r[0], r[1]);
        FaMma<D>::run(o[2 * dp + 1], pa, r[2], r[3]);
      }
    }
  }
  fa_wait<0>();
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  if (i0 < g.qlen) {
    u16* orow = out + (i64)(g.q0 + i0) * orow_stride + (i64)h * DH + 2 * tq;
#pragma unroll
    for (int j = 0; j < DH / 8; ++j)
      *reinterpret_cast<u32*>(orow + j * 8) = FaMma<D>::pack(o[j][0] * inv0, o[j][1] * inv0);
  }
  if (i1 < g.qlen) {
    u16* orow = out + (i64)(g.q0 + i1) * orow_stride + (i64)h * DH + 2 * tq;
#pragma unroll
    for (int j = 0; j < DH / 8; ++j)
      *reinterpret_cast<u32*>(orow + j * 8) = FaMma<D>::pack(o[j][2] * inv1, o[j][3] * inv1);
  }
}

#define FLASH(NAME, TAG, DH)                                                                         \
  extern "C" __global__ void __launch_bounds__(128) NAME(                                            \
      u16* out, const u16* q, const u16* kb, const u16* vb, const int* block_tables, int max_blocks,  \
      int block_size, const int* seq_lens, const int* starts, const int* num_seqs_ptr, int n_seg_cap, \
      int mode, int causal, int skip_single, int T, int Hq, int Hkv, i64 q_stride, i64 k_stride,     \
      i64 v_stride, float scale_log2) {                                                              \
    CG_PDL_ENTRY();                                                                                  \
    flash_body<TAG, DH>(out, q, kb, vb, block_tables, max_blocks, block_size, seq_lens, starts,      \
                        num_seqs_ptr, n_seg_cap, mode, causal, skip_single, T, Hq, Hkv, q_stride,    \
                        k_stride, v_stride, scale_log2);                                             \
  }
// Part 6: every prefill kernel.
#if CG_IN_PART(6)
FLASH(flash_f16_d64, F16, 64)
FLASH(flash_f16_d128, F16, 128)
FLASH(flash_bf16_d64, BF16, 64)
FLASH(flash_bf16_d128, BF16, 128)
#endif

// ---------------------------------------------------------------- paged decode (split-KV)
// One CTA per (key split, KV head, query row); the G = Hq/Hkv query heads of the KV group are
// the rows of one 16-row mma tile, so each K/V byte is read once per group. Key tiles of
// 16*WPH keys stream through a 3-stage cp.async pipeline; of the WPH warps of a head, warp w
// owns keys 16w..16w+15 of every tile and keeps its own online softmax. The NS CTAs of a row
// form a thread-block cluster (sm_90):
// every warp of every CTA leaves (max, sum, O) in shared memory and the CTAs merge them
// through distributed shared memory in a fixed order (deterministic, no workspace, no atomics).
// SERIAL: one CTA computes the NS splits one after another (the pipeline runs on across split
// boundaries) with the same per-split and merge arithmetic, so its bits equal the cluster's:
// for large batches, where the cluster's short splits leave the multiprocessors waiting.

// A warp's partials (max, sum, unnormalized O of its 16 rows) into shared memory: max and
// sum at pm/pl[warp], O at pw (16 x DH floats).
template <int DH>
__device__ __forceinline__ void fa_dec_partials(float (*pm)[16], float (*pl)[16], float* pw, int warp, int gr, int tq,
                                                float m0, float m1, float l0, float l1, const float (&o)[DH / 8][4]) {
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  if (tq == 0) {
    pm[warp][gr] = m0; pl[warp][gr] = l0;
    pm[warp][gr + 8] = m1; pl[warp][gr + 8] = l1;
  }
#pragma unroll
  for (int j = 0; j < DH / 8; ++j) {
    *reinterpret_cast<float2*>(pw + gr * DH + j * 8 + 2 * tq) = make_float2(o[j][0], o[j][1]);
    *reinterpret_cast<float2*>(pw + (gr + 8) * DH + j * 8 + 2 * tq) = make_float2(o[j][2], o[j][3]);
  }
}

// Merge the WPH warps w0..w0+WPH-1 for element e2 (row `row`) of a head: its (max, sum, O).
// Warp w's O lies at lo + w*16*DH for w < half, else at hi + (w-half)*16*DH.
template <int DH, int WPH>
__device__ __forceinline__ void fa_dec_merge_warps(const float (*pm)[16], const float (*pl)[16], const float* lo,
                                                   const float* hi, int half, int w0, int e2, int row, float& mx,
                                                   float& L, float& A) {
  const float NEG_INF = -__int_as_float(0x7f800000);
  mx = NEG_INF;
#pragma unroll
  for (int w = 0; w < WPH; ++w) mx = fmaxf(mx, pm[w0 + w][row]);
  const float base = (mx == NEG_INF) ? 0.f : mx;
  L = 0.f;
  A = 0.f;
#pragma unroll
  for (int w = 0; w < WPH; ++w) {
    const int wi = w0 + w;
    const float a = exp2f(pm[wi][row] - base);  // 0 for a warp that saw no key
    L += pl[wi][row] * a;
    A += (wi < half ? lo + wi * 16 * DH : hi + (wi - half) * 16 * DH)[e2] * a;
  }
}

template <class D, int DH, int NS, int KH, int WPH, bool SERIAL>
__device__ __forceinline__ void flash_decode_body(
    u16* __restrict__ out, const u16* __restrict__ q, const u16* __restrict__ kb, const u16* __restrict__ vb,
    const int* __restrict__ block_tables, int max_blocks, int block_size, const int* __restrict__ seq_lens,
    const int* __restrict__ qsl, const int* __restrict__ num_seqs_ptr, int n_seq_cap, int mixed, int Hq,
    int Hkv, i64 q_stride, float scale_log2) {
  static_assert(NS == 1 || KH == 1, "the cluster merge handles one KV head per CTA");
  static_assert(!SERIAL || (NS > 1 && WPH % 2 == 0), "serial splits: NS > 1, a stage holds the warps' partials");
  // WPH warps per head, each owning 16 keys of every BK-key tile
  constexpr int BK = 16 * WPH, NW = WPH * KH, NT = 32 * NW, STAGES = 3, CH = DH / 8;
  constexpr int TILE = BK * DH * 2, STAGE = KH * TILE;
  extern __shared__ __align__(128) unsigned char fa_smem_raw[];
  __shared__ float pm[NW][16], pl[NW][16];
  unsigned char* sQ = fa_smem_raw;  // [KH][16][DH]
  unsigned char* sK = sQ + KH * 16 * DH * 2;
  unsigned char* sV = sK + STAGES * STAGE;
  float* po = reinterpret_cast<float*>(sK);  // [NW warps][16 rows][DH], after the key loop
  const float NEG_INF = -__int_as_float(0x7f800000);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int hw = warp / WPH, wk = warp % WPH;  // this warp's head in the CTA and key slice
  const int rank = SERIAL ? 0 : blockIdx.x, kvh0 = blockIdx.y * KH, sq = blockIdx.z;  // sq: sequence
  const int G = Hq / Hkv;
  const i64 k_stride = (i64)Hkv * DH, head_off = (i64)kvh0 * DH;

  const int ns = min(*num_seqs_ptr, n_seq_cap);
  int n_keys = 0, t = sq;  // t: the query row (decode launch: row sq is sequence sq)
  if (mixed) {
    // mixed launch: one CTA (or cluster) per sequence row; only single-query sequences are ours,
    // the prefill kernel owns the rest (a whole CTA/cluster leaves together: no barrier skipped)
    if (sq >= ns || qsl[sq + 1] - qsl[sq] != 1) return;
    t = qsl[sq];
    n_keys = min(seq_lens[sq], max_blocks * block_size);
  } else if (ns > 0 && t < qsl[ns]) {
    const int q_len = qsl[t + 1] - qsl[t];
    n_keys = min(seq_lens[t] - q_len + (t - qsl[t]) + 1, max_blocks * block_size);
  }
  const int ntiles = n_keys > 0 ? (n_keys + BK - 1) / BK : 0;
  const int per = (ntiles + NS - 1) / NS;
  // this CTA's key tiles [tb, te): its split's, or (SERIAL) every split's, one after another
  const int tb = SERIAL ? 0 : min(rank * per, ntiles), te = SERIAL ? ntiles : min(tb + per, ntiles);
  const int* bt = block_tables + (i64)(n_keys > 0 ? sq : 0) * max_blocks;

  const u32 aQ = fa_smem(sQ), aK = fa_smem(sK), aV = fa_smem(sV);
  for (int i = threadIdx.x; i < KH * 16 * CH; i += NT) {
    const int hh = i / (16 * CH), r = (i / CH) % 16, c = i % CH;
    const bool ok = r < G && n_keys > 0;
    fa_cp16(aQ + hh * 16 * DH * 2 + fa_swz<DH>(r, c),
            ok ? q + (i64)t * q_stride + (i64)((kvh0 + hh) * G + r) * DH + c * 8 : q, ok);
  }
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (tb + st < te)
      fa_load_kv<DH, NT, KH, BK>(aK + st * STAGE, aV + st * STAGE, kb, vb, 1, bt, block_size, 0, (tb + st) * BK,
                             n_keys, k_stride, k_stride, head_off);
    fa_commit();
  }
  const int gr = lane >> 2, tq = lane & 3;
  u32 qf[DH / 16][4];
  float o[DH / 8][4];
  float m0, m1, l0, l1;
  // SERIAL: split sp's merged (max, sum) per row and O per element of this thread
  constexpr int EMAX = (16 * DH + NT - 1) / NT;
  __shared__ float rm[SERIAL ? NS : 1][16], rl[SERIAL ? NS : 1][16];
  float ra[SERIAL ? NS : 1][SERIAL ? EMAX : 1];
  for (int sp = 0; sp < (SERIAL ? NS : 1); ++sp) {
    const int t0 = SERIAL ? min(sp * per, ntiles) : tb, t1 = SERIAL ? min(t0 + per, ntiles) : te;
#pragma unroll
    for (int j = 0; j < DH / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    m0 = NEG_INF; m1 = NEG_INF; l0 = 0.f; l1 = 0.f;
    for (int kt = t0; kt < t1; ++kt) {
      fa_wait<STAGES - 2>();
      __syncthreads();
      {
        const int nx = kt + STAGES - 1;
        if (nx < te) {
          const int st = (nx - tb) % STAGES;
          fa_load_kv<DH, NT, KH, BK>(aK + st * STAGE, aV + st * STAGE, kb, vb, 1, bt, block_size, 0, nx * BK, n_keys,
                                 k_stride, k_stride, head_off);
        }
        fa_commit();
      }
      if (kt == tb) {
#pragma unroll
        for (int kk = 0; kk < DH / 16; ++kk)
          fa_ldm4(qf[kk], aQ + hw * 16 * DH * 2 + fa_swz<DH>(lane & 15, kk * 2 + (lane >> 4)));
      }
      const int st = (kt - tb) % STAGES;
      const u32 k_s = aK + st * STAGE + hw * TILE, v_s = aV + st * STAGE + hw * TILE;
      float s[2][4];
#pragma unroll
      for (int j = 0; j < 2; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DH / 16; ++kk) {
        u32 r[4];
        fa_ldm4(r, k_s + fa_swz<DH>(wk * 16 + ((lane >> 4) << 3) + (lane & 7), kk * 2 + ((lane >> 3) & 1)));
        FaMma<D>::run(s[0], qf[kk], r[0], r[1]);
        FaMma<D>::run(s[1], qf[kk], r[2], r[3]);
      }
      const int kbase = kt * BK + wk * 16 + 2 * tq;
      float mx0 = m0, mx1 = m1;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int k0 = kbase + j * 8;
        s[j][0] = (k0 < n_keys) ? s[j][0] * scale_log2 : NEG_INF;
        s[j][1] = (k0 + 1 < n_keys) ? s[j][1] * scale_log2 : NEG_INF;
        s[j][2] = (k0 < n_keys) ? s[j][2] * scale_log2 : NEG_INF;
        s[j][3] = (k0 + 1 < n_keys) ? s[j][3] * scale_log2 : NEG_INF;
        mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
        mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      const float b0 = (mx0 == NEG_INF) ? 0.f : mx0, b1 = (mx1 == NEG_INF) ? 0.f : mx1;
      const float a0 = exp2f(m0 - b0), a1 = exp2f(m1 - b1);
      m0 = mx0;
      m1 = mx1;
      float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        s[j][0] = exp2f(s[j][0] - b0);
        s[j][1] = exp2f(s[j][1] - b0);
        s[j][2] = exp2f(s[j][2] - b1);
        s[j][3] = exp2f(s[j][3] - b1);
        ps0 += s[j][0] + s[j][1];
        ps1 += s[j][2] + s[j][3];
      }
      l0 = l0 * a0 + ps0;
      l1 = l1 * a1 + ps1;
      u32 pa[4];
      pa[0] = FaMma<D>::pack(s[0][0], s[0][1]);
      pa[1] = FaMma<D>::pack(s[0][2], s[0][3]);
      pa[2] = FaMma<D>::pack(s[1][0], s[1][1]);
      pa[3] = FaMma<D>::pack(s[1][2], s[1][3]);
#pragma unroll
      for (int dp = 0; dp < DH / 16; ++dp) {
        u32 r[4];
        fa_ldm4t(r, v_s + fa_swz<DH>(wk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7), dp * 2 + (lane >> 4)));
        o[2 * dp][0] *= a0; o[2 * dp][1] *= a0; o[2 * dp][2] *= a1; o[2 * dp][3] *= a1;
        o[2 * dp + 1][0] *= a0; o[2 * dp + 1][1] *= a0; o[2 * dp + 1][2] *= a1; o[2 * dp + 1][3] *= a1;
        FaMma<D>::run(o[2 * dp], pa, r[0], r[1]);
        FaMma<D>::run(o[2 * dp + 1], pa, r[2], r[3]);
      }
    }
    if (SERIAL) {
      // close split sp: the stage of its last tile is free (the tiles in flight are the next two),
      // so it holds the warps' partials; its merged (max, sum, O) go to rm, rl and ra[sp]
      __syncthreads();  // every warp is done reading that stage
      const int fs = (t1 - tb + STAGES - 1) % STAGES;
      float* lo = reinterpret_cast<float*>(sK + fs * STAGE);
      float* hi = reinterpret_cast<float*>(sV + fs * STAGE);
      const int half = WPH / 2;
      fa_dec_partials<DH>(pm, pl, warp < half ? lo + warp * 16 * DH : hi + (warp - half) * 16 * DH, warp, gr, tq,
                          m0, m1, l0, l1, o);
      __syncthreads();
      for (int e = threadIdx.x, i = 0; e < G * DH; e += NT, ++i) {
        const int row = e / DH;
        float mx, L, A;
        fa_dec_merge_warps<DH, WPH>(pm, pl, lo, hi, half, 0, e, row, mx, L, A);
        ra[sp][i] = A;
        if (e % DH == 0) { rm[sp][row] = mx; rl[sp][row] = L; }
      }
      __syncthreads();  // before the stage is refilled and pm, pl rewritten
    }
  }  // splits
  if (SERIAL) {
    // merge the NS splits in rank order, as the cluster does
    u16* orow = out + (i64)t * Hq * DH + (i64)kvh0 * G * DH;
    for (int e = threadIdx.x, i = 0; e < G * DH; e += NT, ++i) {
      const int row = e / DH;
      float mr[NS];
      float mx = NEG_INF;
#pragma unroll
      for (int rk = 0; rk < NS; ++rk) {
        mr[rk] = rm[rk][row];
        mx = fmaxf(mx, mr[rk]);
      }
      const float base = (mx == NEG_INF) ? 0.f : mx;
      float L = 0.f, A = 0.f;
#pragma unroll
      for (int rk = 0; rk < NS; ++rk) {
        const float a = exp2f(mr[rk] - base);
        L += rl[rk][row] * a;
        A += ra[rk][i] * a;
      }
      orow[e] = D::from_f(L > 0.f ? A / L : 0.f);
    }
    return;
  }
  fa_wait<0>();
  __syncthreads();  // the stage buffers become the partial-result buffer
  fa_dec_partials<DH>(pm, pl, po + warp * 16 * DH, warp, gr, tq, m0, m1, l0, l1, o);
  __syncthreads();
  // merge the WPH warps of each head: (max, sum, unnormalized O) per row; with a cluster, O goes
  // in place of warp 0's (each element is then read and written by one thread only)
  __shared__ float cm[16], cl[16];
  for (int e = threadIdx.x; e < KH * G * DH; e += NT) {
    const int hh = e / (G * DH), e2 = e - hh * G * DH, row = e2 / DH;
    float mx, L, A;
    fa_dec_merge_warps<DH, WPH>(pm, pl, po, po + (NW / 2) * 16 * DH, NW / 2, WPH * hh, e2, row, mx, L, A);
    if (NS == 1) {
      out[(i64)t * Hq * DH + (i64)kvh0 * G * DH + e] = D::from_f(L > 0.f ? A / L : 0.f);
    } else {
      po[e] = A;  // each element is read and written by the same thread only
      if (e % DH == 0) { cm[row] = mx; cl[row] = L; }
    }
  }
  if (NS == 1) return;
  fa_cluster_sync();
  // merge the NS CTAs of the cluster; the G*DH outputs are shared among them
  const u32 a_cm = fa_smem(cm), a_cl = fa_smem(cl), a_po = fa_smem(po);
  u16* orow = out + (i64)t * Hq * DH + (i64)kvh0 * G * DH;
  for (int e = rank * NT + threadIdx.x; e < G * DH; e += NS * NT) {
    const int row = e / DH;
    float mr[NS];
    float mx = NEG_INF;
#pragma unroll
    for (int rk = 0; rk < NS; ++rk) {
      mr[rk] = fa_ld_cluster<NS>(a_cm + row * 4, rk);
      mx = fmaxf(mx, mr[rk]);
    }
    const float base = (mx == NEG_INF) ? 0.f : mx;
    float L = 0.f, A = 0.f;
#pragma unroll
    for (int rk = 0; rk < NS; ++rk) {
      const float a = exp2f(mr[rk] - base);
      L += fa_ld_cluster<NS>(a_cl + row * 4, rk) * a;
      A += fa_ld_cluster<NS>(a_po + (u32)(e * 4), rk) * a;
    }
    orow[e] = D::from_f(L > 0.f ? A / L : 0.f);
  }
  fa_cluster_sync();  // peers may still read this CTA's partials
}

#define FLASH_DEC_KERNEL(NAME, TAG, DH, NS, KH, WPH, SERIAL, CLUSTER)                                \
  extern "C" __global__ void __launch_bounds__(32 * KH * WPH) CLUSTER NAME(                          \
      u16* out, const u16* q, const u16* kb, const u16* vb, const int* block_tables, int max_blocks,  \
      int block_size, const int* seq_lens, const int* qsl, const int* num_seqs_ptr, int n_seq_cap,    \
      int mixed, int Hq, int Hkv, i64 q_stride, float scale_log2) {                                  \
    CG_PDL_ENTRY();                                                                                  \
    flash_decode_body<TAG, DH, NS, KH, WPH, SERIAL>(out, q, kb, vb, block_tables, max_blocks,        \
                                   block_size, seq_lens, qsl, num_seqs_ptr, n_seq_cap, mixed, Hq,    \
                                   Hkv, q_stride, scale_log2);                                       \
  }
#define FLASH_DEC(NAME, TAG, DH, NS, KH, WPH) FLASH_DEC_KERNEL(NAME, TAG, DH, NS, KH, WPH, false, FA_CLUSTER_X(NS))
#define FLASH_DEC_SERIAL(NAME, TAG, DH, NS) FLASH_DEC_KERNEL(NAME, TAG, DH, NS, 1, 4, true, )
// _s<NS>: one KV head per CTA (4 warps, 64-key tiles), NS CTAs per cluster; _s4serial: the same
// four splits in one CTA, bit for bit (no cluster: grid x is 1). For large batches
// (no split) several KV heads per CTA, so that each key is one contiguous run of KH*DH*2 bytes:
// _h2 (2 heads, 8 warps, 64-key tiles), _h2k32 (2 heads, 4 warps, 32-key tiles: half the
// shared memory, two CTAs per SM), _h4k32 (4 heads, 8 warps, 32-key tiles).
#define FLASH_DEC_SPLITS(TAG, DT, DH)                         \
  FLASH_DEC(flash_decode_##DT##_d##DH##_s1, TAG, DH, 1, 1, 4)    \
  FLASH_DEC(flash_decode_##DT##_d##DH##_s2, TAG, DH, 2, 1, 4)    \
  FLASH_DEC(flash_decode_##DT##_d##DH##_s4, TAG, DH, 4, 1, 4)    \
  FLASH_DEC(flash_decode_##DT##_d##DH##_s8, TAG, DH, 8, 1, 4)    \
  FLASH_DEC_SERIAL(flash_decode_##DT##_d##DH##_s4serial, TAG, DH, 4)
#define FLASH_DEC_HEADS(TAG, DT, DH)                          \
  FLASH_DEC(flash_decode_##DT##_d##DH##_h2, TAG, DH, 1, 2, 4)    \
  FLASH_DEC(flash_decode_##DT##_d##DH##_h2k32, TAG, DH, 1, 2, 2) \
  FLASH_DEC(flash_decode_##DT##_d##DH##_h4k32, TAG, DH, 1, 4, 2)
// Parts 7-14: one per (dtype, D, key-split or several-heads variants).
#if CG_IN_PART(7)
FLASH_DEC_SPLITS(F16, f16, 64)
#endif
#if CG_IN_PART(8)
FLASH_DEC_HEADS(F16, f16, 64)
#endif
#if CG_IN_PART(9)
FLASH_DEC_SPLITS(F16, f16, 128)
#endif
#if CG_IN_PART(10)
FLASH_DEC_HEADS(F16, f16, 128)
#endif
#if CG_IN_PART(11)
FLASH_DEC_SPLITS(BF16, bf16, 64)
#endif
#if CG_IN_PART(12)
FLASH_DEC_HEADS(BF16, bf16, 64)
#endif
#if CG_IN_PART(13)
FLASH_DEC_SPLITS(BF16, bf16, 128)
#endif
#if CG_IN_PART(14)
FLASH_DEC_HEADS(BF16, bf16, 128)
#endif
