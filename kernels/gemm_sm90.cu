// GEMM on Hopper's warpgroup tensor cores: out[M, N] = a[M, K] @ w[N, K]^T (+ bias[N]),
// fp16/bf16 storage, fp32 accumulation. Built for sm_90a only: wgmma exists on no other
// target, so for any other -arch the kernels compile empty (the loader never runs them).
//
// gemm_<dt>_w<BM>x<BN>s<STAGES>_s<S>: CTA tile BM x BN with BM / 64 warpgroups of 64 rows.
//   A producer warp (one more after the warpgroups) stages 64-wide K slices of a and w into
//   shared memory with TMA bulk tensor copies (128-byte swizzle, rows or columns past the
//   tensor's end filled with zeros), STAGES deep; per stage a "full" mbarrier counts the
//   bytes in and an "empty" mbarrier the consumer warps done with it. Each warpgroup runs
//   m64nBNk16 wgmma straight from shared memory, one group kept in flight. S > 1 splits K over a cluster of S CTAs summed through
//   distributed shared memory (gemm_common.cuh), as in the mma.sync kernels: one launch, no
//   workspace, no atomics, a fixed summation order. Tensor maps are encoded on the host
//   (cgraph/kernels/tensor_map.py) and passed by value. Needs K % 8 == 0 and 16-byte
//   aligned a and w (the TMA's global-address rules); out and bias need element alignment
//   only (the shared epilogue picks 8-byte stores from out's address).
#include "gemm_common.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define CG_WGMMA 1
#else
#define CG_WGMMA 0
#endif

typedef unsigned long long u64;

#define CG_WGMMA_N64(PTX)                                                              \
  asm volatile(                                                                           \
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                                        \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." PTX "." PTX " {"                   \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "  \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"  \
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"   \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),  \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),  \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),  \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])  \
      : "l"(da), "l"(db)  \
      : "memory")

#define CG_WGMMA_N128(PTX)                                                              \
  asm volatile(                                                                           \
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                                        \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX "." PTX " {"                   \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "  \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "  \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "  \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"  \
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"   \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),  \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),  \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),  \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),  \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),  \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),  \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),  \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])  \
      : "l"(da), "l"(db)  \
      : "memory")

// wgmma.mma_async m64nNk16, fp32 accumulators d (N / 2 per thread), a and b from shared
// memory through descriptors, no transposes (both K-major).
template <class D, int N> struct Wgmma;
template <> struct Wgmma<F16, 64> {
  static __device__ __forceinline__ void run(float* d, u64 da, u64 db) { CG_WGMMA_N64("f16"); }
};
template <> struct Wgmma<F16, 128> {
  static __device__ __forceinline__ void run(float* d, u64 da, u64 db) { CG_WGMMA_N128("f16"); }
};
template <> struct Wgmma<BF16, 64> {
  static __device__ __forceinline__ void run(float* d, u64 da, u64 db) { CG_WGMMA_N64("bf16"); }
};
template <> struct Wgmma<BF16, 128> {
  static __device__ __forceinline__ void run(float* d, u64 da, u64 db) { CG_WGMMA_N128("bf16"); }
};

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator reads or writes across an in-flight wgmma.
__device__ __forceinline__ void fence_acc(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// Shared-memory matrix descriptor of a K-major tile: rows of 64 elements (128 bytes) with the
// 128-byte swizzle, 8-row groups 1024 bytes apart (tile base 1024-byte aligned).
__device__ __forceinline__ u64 wg_desc(u32 saddr) {
  return (u64)((saddr & 0x3FFFF) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}

// Dynamic shared memory: the TMA pipeline, STAGES * (BM + BN) * 128 bytes, or the fp32
// epilogue tile, BM * (BN + 4) * 4 bytes (they share the space), plus 1 KB to align the base
// to 1024 bytes; computed by cgraph/kernels/gemm_plan.wgmma_smem_bytes.

// The kernel parameter a tensor map arrives in (a CUtensorMap, opaque here).
struct __align__(64) TensorMap { u64 opaque[16]; };

__device__ __forceinline__ void mbar_init(u32 bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(u32 bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, int parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void tma_load_2d(u32 dst, const TensorMap* map, int c0, int c1, u32 bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
      ::"r"(dst), "l"(reinterpret_cast<u64>(map)), "r"(c0), "r"(c1), "r"(bar) : "memory");
}

__device__ __forceinline__ void tma_prefetch(const TensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<u64>(map)) : "memory");
}

template <class D, int WGS, int BN, int STAGES, int SPLIT>
__device__ __forceinline__ void gemm_tma_body(u16* __restrict__ out, const TensorMap* tma_a, const TensorMap* tma_w,
                                              const u16* __restrict__ bias, int has_bias, int M, int N, int K,
                                              int ktiles_per_split) {
#if CG_WGMMA
  constexpr int BM = 64 * WGS, BK = 64, CONSUMERS = 128 * WGS, NT = CONSUMERS + 32;
  constexpr int A_BYTES = BM * 128, STAGE_BYTES = (BM + BN) * 128;
  constexpr int NI = BN > 128 ? BN / 128 : 1;
  constexpr int IN = BN / NI;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ __align__(8) u64 bars[2 * STAGES];  // full[s]: slice landed; empty[s]: slice consumed
  const u32 raw = smem_addr(smem_raw);
  const u32 base = (raw + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (base - raw);
  const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int split = (SPLIT > 1) ? (int)blockIdx.z : 0;
  const int ktiles = (K + BK - 1) / BK;
  const int kt0 = split * ktiles_per_split;
  const int nkt = max(min(kt0 + ktiles_per_split, ktiles) - kt0, 0);
  const u32 full0 = smem_addr(bars), empty0 = full0 + 8 * STAGES;

  if (tid == 0) {
    tma_prefetch(tma_a);  // fetch the descriptors while the barriers are set up
    tma_prefetch(tma_w);
#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full0 + 8 * s, 1);
      mbar_init(empty0 + 8 * s, CONSUMERS / 32);  // one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  // a's box has min(BM, M rounded up to 8) rows (set by the host): for a skinny batch the
  // TMA does not fill the rest with zeros; the rows left stale only feed output rows >= M,
  // which are never stored (an output row depends on its own input row alone)
  const int a_box = min(BM, (M + 7) & ~7);
  const u32 stage_tx = (u32)(a_box + BN) * 128;
  auto load_stage = [&](int stage, int kt) {
    const u32 as = base + stage * STAGE_BYTES, bar = full0 + 8 * stage;
    mbar_expect_tx(bar, stage_tx);
    tma_load_2d(as, tma_a, kt * BK, m0, bar);
    tma_load_2d(as + A_BYTES, tma_w, kt * BK, n0, bar);
  };

  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
  if (tid >= CONSUMERS) {
    // Producer warp: refill each stage as soon as every consumer warp is done with it.
    if (tid == CONSUMERS) {
      for (int i = 0; i < nkt; ++i) {
        if (i >= STAGES) mbar_wait(empty0 + 8 * (i % STAGES), (i / STAGES - 1) & 1);
        load_stage(i % STAGES, kt0 + i);
      }
    }
  } else {
    for (int i = 0; i < nkt; ++i) {
      const int stage = i % STAGES;
      mbar_wait(full0 + 8 * stage, (i / STAGES) & 1);
      const u32 as = base + stage * STAGE_BYTES + wg * 64 * 128, bs = base + stage * STAGE_BYTES + A_BYTES;
      const u64 da = wg_desc(as), db = wg_desc(bs);
#pragma unroll
      for (int r = 0; r < BN / 2; ++r) fence_acc(acc[r]);
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk)
#pragma unroll
        for (int j = 0; j < NI; ++j)  // +32 bytes per k16 step; +IN rows (IN * 128 bytes) per instruction
          Wgmma<D, IN>::run(acc + j * (IN / 2), da + 2 * kk, db + 2 * kk + j * IN * 8);
      wg_commit();
      wg_wait<1>();  // slice i - 1 is consumed; slice i may still run
#pragma unroll
      for (int r = 0; r < BN / 2; ++r) fence_acc(acc[r]);
      if (i > 0 && lane == 0) mbar_arrive(empty0 + 8 * ((i - 1) % STAGES));
    }
    wg_wait<0>();
#pragma unroll
    for (int r = 0; r < BN / 2; ++r) fence_acc(acc[r]);
  }
  __syncthreads();  // every slice consumed: the stages become the epilogue tile

  constexpr int LDC = BN + 4;
  float* Cs = reinterpret_cast<float*>(smem);
  const int row0 = wg * 64 + ((tid >> 5) & 3) * 16 + (lane >> 2);
  if (tid < CONSUMERS) {  // the producer warp holds no accumulators
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const int c = j * 8 + (lane & 3) * 2;
      Cs[row0 * LDC + c] = acc[4 * j];
      Cs[row0 * LDC + c + 1] = acc[4 * j + 1];
      Cs[(row0 + 8) * LDC + c] = acc[4 * j + 2];
      Cs[(row0 + 8) * LDC + c + 1] = acc[4 * j + 3];
    }
  }
  tile_store_epilogue<D, BM, BN, SPLIT, NT>(Cs, split, out, bias, has_bias, M, N, m0, n0);
#endif
}

#define GEMM_TMA(NAME, TAG, WGS, BN, ST, S)                                                          \
  extern "C" __global__ void __launch_bounds__(128 * WGS + 32) CG_CLUSTER_Z(S)                            \
  NAME(u16* out, const __grid_constant__ TensorMap tma_a, const __grid_constant__ TensorMap tma_w,   \
       const u16* bias, int has_bias, int M, int N, int K, int ktiles_per_split) {                   \
    CG_PDL_ENTRY();                                                                                  \
    gemm_tma_body<TAG, WGS, BN, ST, S>(out, &tma_a, &tma_w, bias, has_bias, M, N, K, ktiles_per_split); \
  }
// Tile configurations (keep in sync with WGMMA_TILES in cgraph/kernels/gemm_plan.py):
//   w128x64s8: skinny outputs (M <= 128 with few 128-wide tiles), 8 stages
//   w128x128s6: the default, 6 stages
//   w128x256s4: large outputs (over 3 waves of 128x128 tiles), 4 stages
#define GEMM_TMA_CFGS(TAG, DT, S)                                \
  GEMM_TMA(gemm_##DT##_w128x64s8_s##S, TAG, 2, 64, 8, S)         \
  GEMM_TMA(gemm_##DT##_w128x128s6_s##S, TAG, 2, 128, 6, S)       \
  GEMM_TMA(gemm_##DT##_w128x256s4_s##S, TAG, 2, 256, 4, S)
// Parts 0-5 (compiled as separate NVRTC programs): one per (dtype, split).
#if CG_IN_PART(0)
GEMM_TMA_CFGS(F16, f16, 1)
#endif
#if CG_IN_PART(1)
GEMM_TMA_CFGS(F16, f16, 2)
#endif
#if CG_IN_PART(2)
GEMM_TMA_CFGS(F16, f16, 4)
#endif
#if CG_IN_PART(3)
GEMM_TMA_CFGS(BF16, bf16, 1)
#endif
#if CG_IN_PART(4)
GEMM_TMA_CFGS(BF16, bf16, 2)
#endif
#if CG_IN_PART(5)
GEMM_TMA_CFGS(BF16, bf16, 4)
#endif
