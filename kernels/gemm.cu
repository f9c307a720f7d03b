// GEMM on tensor cores: out[M, N] = a[M, K] @ w[N, K]^T (+ bias[N]), fp16/bf16 storage,
// fp32 accumulation, inline PTX (cp.async, ldmatrix, mma.sync m16n8k16) so that it builds
// with NVRTC anywhere.
//
// Four kernels (all deterministic: fixed summation order, no atomics):
//   gemm_<dt>_<tile>_s<S>: tiled tensor-core kernel; S > 1 splits K over a thread-block
//     cluster of S CTAs (sm_90) whose fp32 partial tiles are summed through distributed
//     shared memory: no workspace, one launch, capturable. Needs K % 8 == 0 and 16-byte
//     aligned a/w (the launcher checks and otherwise uses the fallback); out and bias need
//     element alignment only (the epilogue picks 8-byte stores from out's address).
//   gemv_<dt>_m<MR> (MR = 1, 2, 4): M <= MR rows; each warp streams one weight row with
//     16-byte loads and fp32 FMA (decode: the weights' bytes dominate). Same needs as the
//     tiled kernel (16-byte loads of a and w; scalar stores of out, scalar bias loads).
//   gemm_<dt>_stream: M <= 32 rows; weights streamed straight into mma.sync fragments, no
//     shared memory staging, next K group prefetched into registers (see below).
//   gemm_fallback_<dt>: any K, any element-aligned pointers (scalar loads and stores only);
//     smem tiles and fp32 FMA (slow, for odd K).
#include "gemm_common.cuh"

__device__ __forceinline__ void ldmatrix_x4(u32* r, u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

template <class D> struct Mma;
template <> struct Mma<F16> {
  static __device__ __forceinline__ void run(float* c, const u32* a, const u32* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};
template <> struct Mma<BF16> {
  static __device__ __forceinline__ void run(float* c, const u32* a, const u32* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};

// Dynamic shared memory (bytes) the tiled kernel needs; mirrored in cgraph/kernels/gemm_plan.
template <int BM, int BN, int BK, int STAGES>
struct TileSmem {
  static const int PIPE = STAGES * (BM + BN) * (BK + 8) * 2;
  static const int EPI = BM * (BN + 4) * 4;
  static const int BYTES = PIPE > EPI ? PIPE : EPI;
};

template <class D, int BM, int BN, int BK, int WARPS_M, int WARPS_N, int STAGES, int SPLIT>
__device__ __forceinline__ void gemm_tile_body(u16* __restrict__ out, const u16* __restrict__ A,
                                               const u16* __restrict__ W, const u16* __restrict__ bias,
                                               int has_bias, int M, int N, int K, int ktiles_per_split) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int LDS = BK + 8;  // +16 bytes per row: ldmatrix rows land in distinct banks
  constexpr int NT = WARPS_M * WARPS_N * 32;
  constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N;
  constexpr int MT = WTM / 16, NTL = WTN / 8;
  constexpr int CH = BK / 8;
  u16* As = reinterpret_cast<u16*>(smem_raw);
  u16* Bs = As + STAGES * BM * LDS;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int split = (SPLIT > 1) ? (int)blockIdx.z : 0;
  const int ktiles = (K + BK - 1) / BK;
  const int kt0 = split * ktiles_per_split;
  const int kt1 = min(kt0 + ktiles_per_split, ktiles);
  const int nkt = max(kt1 - kt0, 0);

  auto load_stage = [&](int stage, int kt) {
    const int kbase = kt * BK;
    u16* as = As + stage * BM * LDS;
    u16* bs = Bs + stage * BN * LDS;
#pragma unroll
    for (int c = tid; c < BM * CH; c += NT) {
      const int r = c / CH, kc = (c % CH) * 8;
      const int gm = m0 + r, gk = kbase + kc;
      const bool ok = gm < M && gk < K;
      cp_async16(smem_addr(as + r * LDS + kc), ok ? A + (i64)gm * K + gk : A, ok ? 16 : 0);
    }
#pragma unroll
    for (int c = tid; c < BN * CH; c += NT) {
      const int r = c / CH, kc = (c % CH) * 8;
      const int gn = n0 + r, gk = kbase + kc;
      const bool ok = gn < N && gk < K;
      cp_async16(smem_addr(bs + r * LDS + kc), ok ? W + (i64)gn * K + gk : W, ok ? 16 : 0);
    }
  };

  float acc[MT][NTL][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NTL; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nkt) load_stage(s, kt0 + s);
    cp_async_commit();
  }
  for (int i = 0; i < nkt; ++i) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    const int nxt = i + STAGES - 1;
    if (nxt < nkt) load_stage(nxt % STAGES, kt0 + nxt);
    cp_async_commit();
    const u16* as = As + (i % STAGES) * BM * LDS;
    const u16* bs = Bs + (i % STAGES) * BN * LDS;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      u32 af[MT][4], bfr[NTL][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int row = wm * WTM + mt * 16 + (lane & 15);
        const int col = kk + (lane >> 4) * 8;
        ldmatrix_x4(af[mt], smem_addr(as + row * LDS + col));
      }
#pragma unroll
      for (int nt2 = 0; nt2 < NTL / 2; ++nt2) {
        const int n = wn * WTN + nt2 * 16 + (lane & 7) + ((lane >> 4) << 3);
        const int k = kk + ((lane >> 3) & 1) * 8;
        u32 r[4];
        ldmatrix_x4(r, smem_addr(bs + n * LDS + k));
        bfr[2 * nt2][0] = r[0];
        bfr[2 * nt2][1] = r[1];
        bfr[2 * nt2 + 1][0] = r[2];
        bfr[2 * nt2 + 1][1] = r[3];
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NTL; ++nt) Mma<D>::run(acc[mt][nt], af[mt], bfr[nt]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  // Epilogue: the fp32 tile to shared memory, then the (cluster) sum and store.
  constexpr int LDC = BN + 4;
  float* Cs = reinterpret_cast<float*>(smem_raw);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NTL; ++nt) {
      const int r = wm * WTM + mt * 16 + (lane >> 2);
      const int c = wn * WTN + nt * 8 + (lane & 3) * 2;
      Cs[r * LDC + c] = acc[mt][nt][0];
      Cs[r * LDC + c + 1] = acc[mt][nt][1];
      Cs[(r + 8) * LDC + c] = acc[mt][nt][2];
      Cs[(r + 8) * LDC + c + 1] = acc[mt][nt][3];
    }
  tile_store_epilogue<D, BM, BN, SPLIT, NT>(Cs, split, out, bias, has_bias, M, N, m0, n0);
}

#define GEMM_TILE(NAME, TAG, BM, BN, BK, WM, WN, ST, S)                                            \
  extern "C" __global__ void __launch_bounds__(WM * WN * 32) CG_CLUSTER_Z(S)                       \
  NAME(u16* out, const u16* a, const u16* w, const u16* bias, int has_bias, int M, int N, int K,    \
       int ktiles_per_split) {                                                                      \
    CG_PDL_ENTRY();                                                                                 \
    if (S == 1 || CG_HAS_CLUSTER)                                                                   \
      gemm_tile_body<TAG, BM, BN, BK, WM, WN, ST, S>(out, a, w, bias, has_bias, M, N, K,            \
                                                     ktiles_per_split);                            \
  }
// Tile configurations (keep in sync with cgraph/kernels/gemm_plan.py):
//   t16:  16x64,   BK 64, 4 warps (1x4), 4 stages
//   t32:  32x64,   BK 64, 4 warps (1x4), 4 stages
//   t64:  64x64,   BK 64, 4 warps (2x2), 4 stages
//   t128: 128x128, BK 64, 4 warps (2x2, 64x64 per warp), 3 stages
//   t256: 128x256, BK 64, 8 warps (2x4, 64x64 per warp), 3 stages
// (BK 64 and 64x64 warp tiles measured faster than BK 32 / 64x32 on an H200: the
// `python -m cgraph.bench.gemm_tune --candidates` run.)
#define GEMM_CFGS_SKINNY(TAG, DT, S)                                             \
  GEMM_TILE(gemm_##DT##_t16_s##S, TAG, 16, 64, 64, 1, 4, 4, S)                   \
  GEMM_TILE(gemm_##DT##_t32_s##S, TAG, 32, 64, 64, 1, 4, 4, S)                   \
  GEMM_TILE(gemm_##DT##_t64_s##S, TAG, 64, 64, 64, 2, 2, 4, S)
#define GEMM_CFGS_WIDE(TAG, DT, S)                                               \
  GEMM_TILE(gemm_##DT##_t128_s##S, TAG, 128, 128, 64, 2, 2, 3, S)                \
  GEMM_TILE(gemm_##DT##_t256_s##S, TAG, 128, 256, 64, 2, 4, 3, S)
// Parts 0-15 (compiled as separate NVRTC programs): one per (dtype, split, skinny or wide
// tiles), in the order f16 s1 s2 s4 s8, then bf16.
#if CG_IN_PART(0)
GEMM_CFGS_SKINNY(F16, f16, 1)
#endif
#if CG_IN_PART(1)
GEMM_CFGS_WIDE(F16, f16, 1)
#endif
#if CG_IN_PART(2)
GEMM_CFGS_SKINNY(F16, f16, 2)
#endif
#if CG_IN_PART(3)
GEMM_CFGS_WIDE(F16, f16, 2)
#endif
#if CG_IN_PART(4)
GEMM_CFGS_SKINNY(F16, f16, 4)
#endif
#if CG_IN_PART(5)
GEMM_CFGS_WIDE(F16, f16, 4)
#endif
#if CG_IN_PART(6)
GEMM_CFGS_SKINNY(F16, f16, 8)
#endif
#if CG_IN_PART(7)
GEMM_CFGS_WIDE(F16, f16, 8)
#endif
#if CG_IN_PART(8)
GEMM_CFGS_SKINNY(BF16, bf16, 1)
#endif
#if CG_IN_PART(9)
GEMM_CFGS_WIDE(BF16, bf16, 1)
#endif
#if CG_IN_PART(10)
GEMM_CFGS_SKINNY(BF16, bf16, 2)
#endif
#if CG_IN_PART(11)
GEMM_CFGS_WIDE(BF16, bf16, 2)
#endif
#if CG_IN_PART(12)
GEMM_CFGS_SKINNY(BF16, bf16, 4)
#endif
#if CG_IN_PART(13)
GEMM_CFGS_WIDE(BF16, bf16, 4)
#endif
#if CG_IN_PART(14)
GEMM_CFGS_SKINNY(BF16, bf16, 8)
#endif
#if CG_IN_PART(15)
GEMM_CFGS_WIDE(BF16, bf16, 8)
#endif

// ---- GEMV-like path for tiny M ------------------------------------------------------------
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// Each warp streams one weight row. With one row of a (MR = 1) the CTA's 8 warps share it
// through a shared-memory tile of GEMV_KC columns, converted to fp32 once per CTA rather
// than once per warp: faster in the Llama-1B decode step at batch 1 (README, Known
// limits); with 2 or 4 rows the tile was slower, so those kernels read a directly. The
// conversion is exact and a lane sums its k in one order either way (k = lane * 8 + 256 j,
// j rising), so a row's bits do not depend on MR.
#define GEMV_KC 2048
template <class D, int MR>
__device__ __forceinline__ void gemv_body(u16* __restrict__ out, const u16* __restrict__ A,
                                          const u16* __restrict__ W, const u16* __restrict__ bias,
                                          int has_bias, int M, int N, int K) {
  constexpr int U = 4;  // 16-byte weight loads in flight per lane
  constexpr bool TILE = MR == 1;
  __shared__ __align__(16) float as[TILE ? GEMV_KC : 4];
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const bool live = n < N;  // warps past N still fill the tile and meet the barriers
  const u16* wr = W + (i64)(live ? n : 0) * K;
  float acc[MR];
#pragma unroll
  for (int m = 0; m < MR; ++m) acc[m] = 0.f;
  for (int k0 = 0; k0 < K; k0 += 256 * U) {  // GEMV_KC is a multiple of 256 * U
    uint4 wv[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + u * 256 + lane * 8;
      if (live && k < K) wv[u] = ld_stream16(wr + k); else wv[u] = make_uint4(0, 0, 0, 0);
    }
    const int c0 = k0 - k0 % GEMV_KC;
    if (TILE && k0 == c0) {  // a new tile of a, while this group's weights are in flight
      if (k0) __syncthreads();  // every warp is done with the previous tile
      for (int i = threadIdx.x * 8; i < MR * GEMV_KC; i += blockDim.x * 8) {
        const int m = i / GEMV_KC, k = c0 + i % GEMV_KC;
        float f[8];
        if (m < M && k < K) load_f<D, 8>(A + (i64)m * K + k, f);  // K % 8 == 0: all 8 or none
        else {
#pragma unroll
          for (int e = 0; e < 8; ++e) f[e] = 0.f;
        }
        reinterpret_cast<float4*>(as + i)[0] = make_float4(f[0], f[1], f[2], f[3]);
        reinterpret_cast<float4*>(as + i)[1] = make_float4(f[4], f[5], f[6], f[7]);
      }
      __syncthreads();
    }
    if (!live) continue;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + u * 256 + lane * 8;
      if (k < K) {
        float wf[8];
        const u16* we = reinterpret_cast<const u16*>(&wv[u]);
#pragma unroll
        for (int e = 0; e < 8; ++e) wf[e] = D::to_f(we[e]);
#pragma unroll
        for (int m = 0; m < MR; ++m) {
          if (m < M) {
            float af[8];
            if (TILE) {
              const float4* ap = reinterpret_cast<const float4*>(as + m * GEMV_KC + (k - c0));
              const float4 lo = ap[0], hi = ap[1];
              af[0] = lo.x, af[1] = lo.y, af[2] = lo.z, af[3] = lo.w;
              af[4] = hi.x, af[5] = hi.y, af[6] = hi.z, af[7] = hi.w;
            } else {
              load_f<D, 8>(A + (i64)m * K + k, af);
            }
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[m] += af[e] * wf[e];
          }
        }
      }
    }
  }
  if (!live) return;
#pragma unroll
  for (int m = 0; m < MR; ++m) {
    const float v = warp_sum(acc[m]);
    if (lane == 0 && m < M) out[(i64)m * N + n] = D::from_f(v + (has_bias ? D::to_f(bias[n]) : 0.f));
  }
}

#define GEMV(NAME, TAG, MR)                                                                       \
  extern "C" __global__ void __launch_bounds__(256) NAME(u16* out, const u16* a, const u16* w,    \
                                                         const u16* bias, int has_bias, int M,    \
                                                         int N, int K) {                          \
    CG_PDL_ENTRY();                                                                               \
    gemv_body<TAG, MR>(out, a, w, bias, has_bias, M, N, K);                                       \
  }
// Part 16: the GEMV, streaming and fallback kernels (small programs).
#if CG_IN_PART(16)
GEMV(gemv_f16_m1, F16, 1)
GEMV(gemv_f16_m2, F16, 2)
GEMV(gemv_f16_m4, F16, 4)
GEMV(gemv_bf16_m1, BF16, 1)
GEMV(gemv_bf16_m2, BF16, 2)
GEMV(gemv_bf16_m4, BF16, 4)
#endif

// ---- Streaming tensor-core path for skinny M (gemm_<dt>_stream) ---------------------------
// Every weight element is used by exactly one warp, so weights skip shared memory: each lane
// loads 16 bytes (8 consecutive k) of one weight row straight into mma.sync B fragments. The
// MMA's 16 k slots are mapped onto real k as lane (r, q = lane % 4) holding k = q*8 .. q*8+7 of
// a 32-wide block: MMA j takes the pairs (4j, 4j+1) -> logical (2q, 2q+1) and (4j+2, 4j+3) ->
// logical (2q+8, 2q+9). A is loaded with the same mapping (16-byte loads, L1-cached: all warps
// of the SM read the same few rows), so the dot products are unchanged.
// CTA: KW = blockDim.x / 32 warps on one 16-wide N slice, each warp a strided share of K in
// groups of U 32-wide blocks; the KW partial tiles are summed in shared memory in warp order
// (deterministic). Rows: up to 32 (two m16 tiles; the second is skipped when M <= 16).
// Loads of data no kernel writes while this one runs: plain asm, free to be scheduled.
__device__ __forceinline__ uint4 ld_ro16(const void* p) {
  uint4 v;
  asm("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ uint4 ld_stream16_nv(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
template <class D> __device__ __forceinline__ void mma_nv(float* c, const u32* a, const u32* b);
template <> __device__ __forceinline__ void mma_nv<F16>(float* c, const u32* a, const u32* b) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ __forceinline__ void mma_nv<BF16>(float* c, const u32* a, const u32* b) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ u32 u4_at(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

template <class D, int MT, int NTW, int U>
__device__ __forceinline__ void gemm_stream_body(u16* __restrict__ out, const u16* __restrict__ A,
                                                 const u16* __restrict__ W, const u16* __restrict__ bias,
                                                 int has_bias, int M, int N, int K) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int BM = 16 * MT, BN = 8 * NTW;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, kw = blockDim.x >> 5;
  const int r = lane >> 2, q = lane & 3;
  const int n0 = blockIdx.x * BN;
  const bool two = MT > 1 && M > 16;  // uniform: skip the second m16 tile for M <= 16
  const u16* wrow[NTW];
  bool wok[NTW];
#pragma unroll
  for (int t = 0; t < NTW; ++t) {
    const int n = n0 + t * 8 + r;
    wok[t] = n < N;
    wrow[t] = W + (i64)(wok[t] ? n : 0) * K + q * 8;
  }
  float acc[MT][NTW][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int t = 0; t < NTW; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][t][e] = 0.f;

  // Software pipeline: the next group's weights are in flight while this group's MMAs run.
  // Loads and MMAs are plain (non-volatile) asm so that the compiler may hoist A's loads.
  const int groups = (K + 32 * U - 1) / (32 * U);
  uint4 wv[U][NTW];
  auto load_w = [&](uint4 (&dst)[U][NTW], int g) {
    const int kb = g * 32 * U;
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int t = 0; t < NTW; ++t) {
        const int k = kb + u * 32 + q * 8;
        dst[u][t] = (g < groups && wok[t] && k < K) ? ld_stream16_nv(wrow[t] + kb + u * 32)
                                                      : make_uint4(0, 0, 0, 0);
      }
  };
  load_w(wv, warp);
  for (int g = warp; g < groups; g += kw) {
    const int kb = g * 32 * U;
    uint4 wn[U][NTW];
    load_w(wn, g + kw);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = kb + u * 32 + q * 8;
      uint4 av[MT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = mt * 16 + h * 8 + r;
          av[mt][h] = (row < M && k < K) ? ld_ro16(A + (i64)row * K + k) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          if (mt > 0 && !two) continue;
          const u32 a[4] = {u4_at(av[mt][0], 2 * j), u4_at(av[mt][1], 2 * j), u4_at(av[mt][0], 2 * j + 1),
                            u4_at(av[mt][1], 2 * j + 1)};
#pragma unroll
          for (int t = 0; t < NTW; ++t) {
            const u32 b[2] = {u4_at(wv[u][t], 2 * j), u4_at(wv[u][t], 2 * j + 1)};
            mma_nv<D>(acc[mt][t], a, b);
          }
        }
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int t = 0; t < NTW; ++t) wv[u][t] = wn[u][t];
  }
  // Partial tiles of every warp, then a fixed-order sum over warps.
  float* red = reinterpret_cast<float*>(smem_raw);
  float* mine = red + warp * (BM * BN);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int t = 0; t < NTW; ++t) {
      const int row = mt * 16 + r, col = t * 8 + q * 2;
      mine[row * BN + col] = acc[mt][t][0];
      mine[row * BN + col + 1] = acc[mt][t][1];
      mine[(row + 8) * BN + col] = acc[mt][t][2];
      mine[(row + 8) * BN + col + 1] = acc[mt][t][3];
    }
  __syncthreads();
  const int rows = min(M, BM);
  for (int idx = threadIdx.x; idx < rows * BN; idx += blockDim.x) {
    const int row = idx / BN, col = idx % BN, n = n0 + col;
    if (n >= N) continue;
    float v = 0.f;
    for (int w = 0; w < kw; ++w) v += red[w * (BM * BN) + idx];
    if (has_bias) v += D::to_f(bias[n]);
    out[(i64)row * N + n] = D::from_f(v);
  }
}

#define GEMM_STREAM(NAME, TAG)                                                                    \
  extern "C" __global__ void __launch_bounds__(512) NAME(u16* out, const u16* a, const u16* w,    \
                                                         const u16* bias, int has_bias, int M,    \
                                                         int N, int K) {                          \
    CG_PDL_ENTRY();                                                                               \
    gemm_stream_body<TAG, 2, 2, 4>(out, a, w, bias, has_bias, M, N, K);                           \
  }
#if CG_IN_PART(16)
GEMM_STREAM(gemm_f16_stream, F16)
GEMM_STREAM(gemm_bf16_stream, BF16)
#endif

// ---- Fallback: any K and alignment (scalar loads, fp32 FMA) --------------------------------
template <class D>
__device__ __forceinline__ void gemm_fallback_body(u16* __restrict__ out, const u16* __restrict__ A,
                                                   const u16* __restrict__ W, const u16* __restrict__ bias,
                                                   int has_bias, int M, int N, int K) {
  __shared__ float as[16][17];
  __shared__ float ws[16][17];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int m = blockIdx.y * 16 + ty, n = blockIdx.x * 16 + tx;
  float acc = 0.f;
  for (int k0 = 0; k0 < K; k0 += 16) {
    const int am = blockIdx.y * 16 + ty, wn = blockIdx.x * 16 + ty;
    as[ty][tx] = (am < M && k0 + tx < K) ? D::to_f(A[(i64)am * K + k0 + tx]) : 0.f;
    ws[ty][tx] = (wn < N && k0 + tx < K) ? D::to_f(W[(i64)wn * K + k0 + tx]) : 0.f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < 16; ++kk) acc += as[ty][kk] * ws[tx][kk];
    __syncthreads();
  }
  if (m < M && n < N) out[(i64)m * N + n] = D::from_f(acc + (has_bias ? D::to_f(bias[n]) : 0.f));
}

#define GEMM_FB(NAME, TAG)                                                                        \
  extern "C" __global__ void __launch_bounds__(256) NAME(u16* out, const u16* a, const u16* w,    \
                                                         const u16* bias, int has_bias, int M,    \
                                                         int N, int K) {                          \
    CG_PDL_ENTRY();                                                                               \
    gemm_fallback_body<TAG>(out, a, w, bias, has_bias, M, N, K);                                  \
  }
#if CG_IN_PART(16)
GEMM_FB(gemm_fallback_f16, F16)
GEMM_FB(gemm_fallback_bf16, BF16)
#endif
