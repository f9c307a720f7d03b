// Shared device helpers for every kernel family.
// Header-free on purpose: NVRTC compiles these sources with no CUDA include path, so the
// CPU-only CI build and the GPU build see exactly the same text. The compiler pastes this
// file in place of `#include "common.cuh"` (so the source-keyed cubin cache sees changes).

// Parts: a large family is compiled as several NVRTC programs (in parallel), each with
// -DCGRAPH_PART=<n>, and keeps the instantiations guarded by `#if CG_IN_PART(n)` only
// (cgraph/kernels/families.py lists which part defines which kernel). Without the option
// every part is compiled.
#ifdef CGRAPH_PART
#define CG_IN_PART(n) (CGRAPH_PART == (n))
#else
#define CG_IN_PART(n) 1
#endif

// Programmatic dependent launch (sm_90+). Every kernel starts with CG_PDL_ENTRY(): it
// waits until the grids it depends on have completed and their memory is visible, then
// lets the grid after it launch (that grid waits the same way before it touches memory).
// A kernel launched with the programmatic stream serialization attribute may so be
// scheduled while its predecessor drains; without the attribute both are no-ops.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define CG_PDL_ENTRY()                                  \
  do {                                                  \
    asm volatile("griddepcontrol.wait;" ::: "memory");  \
    asm volatile("griddepcontrol.launch_dependents;"); \
  } while (0)
#else
#define CG_PDL_ENTRY() do { } while (0)
#endif

typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

__device__ __forceinline__ float h2f(u16 x) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x)); return f; }
__device__ __forceinline__ u16 f2h(float f) { u16 x; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(x) : "f"(f)); return x; }
__device__ __forceinline__ float bf2f(u16 x) { return __uint_as_float(((u32)x) << 16); }
__device__ __forceinline__ u16 f2bf(float f) { u16 x; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(x) : "f"(f)); return x; }

// Storage type tags: T is the element as stored, conversion to and from fp32.
struct F16 {
  typedef u16 T;
  static __device__ __forceinline__ float to_f(u16 x) { return h2f(x); }
  static __device__ __forceinline__ u16 from_f(float f) { return f2h(f); }
};
struct BF16 {
  typedef u16 T;
  static __device__ __forceinline__ float to_f(u16 x) { return bf2f(x); }
  static __device__ __forceinline__ u16 from_f(float f) { return f2bf(f); }
};
struct F32 {
  typedef float T;
  static __device__ __forceinline__ float to_f(float x) { return x; }
  static __device__ __forceinline__ float from_f(float f) { return f; }
};

// Elements per 16-byte access for a storage type.
template <class D> struct Vec16 { static const int N = 16 / (int)sizeof(typename D::T); };

// Load N consecutive elements as fp32; a 16-byte vector load when N elements fill 16 bytes.
template <class D, int N>
__device__ __forceinline__ void load_f(const typename D::T* p, float* out) {
  typedef typename D::T T;
  if (N * sizeof(T) == 16) {
    union { uint4 v; T e[16 / sizeof(T)]; } u;
    u.v = *reinterpret_cast<const uint4*>(p);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = D::to_f(u.e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = D::to_f(p[i]);
  }
}

template <class D, int N>
__device__ __forceinline__ void store_f(typename D::T* p, const float* in) {
  typedef typename D::T T;
  if (N * sizeof(T) == 16) {
    union { uint4 v; T e[16 / sizeof(T)]; } u;
#pragma unroll
    for (int i = 0; i < N; ++i) u.e[i] = D::from_f(in[i]);
    *reinterpret_cast<uint4*>(p) = u.v;
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) p[i] = D::from_f(in[i]);
  }
}

// Unpack / pack a 16-byte vector of N elements (N * sizeof(T) == 16).
template <class D, int N>
__device__ __forceinline__ void unpack_vec(const uint4& v, float* out) {
  union { uint4 v; typename D::T e[16 / sizeof(typename D::T)]; } u;
  u.v = v;
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = D::to_f(u.e[i]);
}
template <class D, int N>
__device__ __forceinline__ uint4 pack_vec(const float* in) {
  union { uint4 v; typename D::T e[16 / sizeof(typename D::T)]; } u;
#pragma unroll
  for (int i = 0; i < N; ++i) u.e[i] = D::from_f(in[i]);
  return u.v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets the result. `red` is 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // red may still be read by an earlier call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = (lane < nwarps) ? red[lane] : 0.f;
  v = warp_sum(v);
  return v;
}
