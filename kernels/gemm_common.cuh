// Helpers shared by the tensor-core GEMM families (gemm.cu: mma.sync; gemm_sm90.cu: wgmma):
// cp.async staging, thread-block cluster access, and the epilogue that sums a K split's
// fp32 partial tiles through distributed shared memory and stores the output.
#ifndef CG_GEMM_COMMON
#define CG_GEMM_COMMON
#include "common.cuh"

__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define CG_HAS_CLUSTER 1
#define CG_CLUSTER_Z(S) __cluster_dims__(1, 1, S)
#else
#define CG_HAS_CLUSTER 0
#define CG_CLUSTER_Z(S)
#endif

__device__ __forceinline__ void cluster_sync_all() {
#if CG_HAS_CLUSTER
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ float4 ld_cluster_f4(u32 local_addr, int rank) {
  float4 v;
#if CG_HAS_CLUSTER
  u32 remote;
  asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local_addr), "r"(rank));
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(remote) : "memory");
#else
  v.x = v.y = v.z = v.w = 0.f;
#endif
  return v;
}

// Epilogue of a tiled kernel: Cs is this CTA's fp32 tile, BM x (BN + 4) in shared memory,
// already written by every thread. With a K split over a cluster of SPLIT CTAs, CTA `split`
// sums rows [split*BM/SPLIT, (split+1)*BM/SPLIT) over the ranks in rank order (deterministic),
// adds the bias and stores; without a split each CTA stores its whole tile.
template <class D, int BM, int BN, int SPLIT, int NT>
__device__ __forceinline__ void tile_store_epilogue(float* Cs, int split, u16* __restrict__ out,
                                                    const u16* __restrict__ bias, int has_bias,
                                                    int M, int N, int m0, int n0) {
  const int tid = threadIdx.x;
  if (SPLIT > 1) cluster_sync_all(); else __syncthreads();
  constexpr int LDC = BN + 4;
  constexpr int ROWS = BM / SPLIT;
  // 8-byte stores of 4 outputs need every row start 8-byte aligned: N % 4 == 0 and out itself
  // 8-byte aligned (a view may start at any element); otherwise element stores
  const bool vec_out = (N % 4) == 0 && (reinterpret_cast<unsigned long long>(out) & 7ull) == 0;
  for (int idx = tid; idx < ROWS * (BN / 4); idx += NT) {
    const int r = split * ROWS + idx / (BN / 4);
    const int c = (idx % (BN / 4)) * 4;
    const int gm = m0 + r, gn = n0 + c;
    float v[4];
    if (SPLIT > 1) {
      const u32 la = smem_addr(Cs + r * LDC + c);
      float4 p[SPLIT];  // all loads in flight first, then a rank-ordered sum
#pragma unroll
      for (int q = 0; q < SPLIT; ++q) p[q] = ld_cluster_f4(la, q);
      v[0] = v[1] = v[2] = v[3] = 0.f;
#pragma unroll
      for (int q = 0; q < SPLIT; ++q) {
        v[0] += p[q].x; v[1] += p[q].y; v[2] += p[q].z; v[3] += p[q].w;
      }
    } else {
      const float4 p = *reinterpret_cast<const float4*>(Cs + r * LDC + c);
      v[0] = p.x; v[1] = p.y; v[2] = p.z; v[3] = p.w;
    }
    if (gm >= M || gn >= N) continue;
    if (has_bias) {
#pragma unroll
      for (int j = 0; j < 4; ++j) if (gn + j < N) v[j] += D::to_f(bias[gn + j]);
    }
    u16* o = out + (i64)gm * N + gn;
    if (vec_out) {
      uint2 pk;
      pk.x = (u32)D::from_f(v[0]) | ((u32)D::from_f(v[1]) << 16);
      pk.y = (u32)D::from_f(v[2]) | ((u32)D::from_f(v[3]) << 16);
      *reinterpret_cast<uint2*>(o) = pk;
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) if (gn + j < N) o[j] = D::from_f(v[j]);
    }
  }
  if (SPLIT > 1) cluster_sync_all();  // peers may still read this CTA's tile
}

#endif  // CG_GEMM_COMMON
