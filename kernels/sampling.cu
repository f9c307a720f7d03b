// Greedy sampling: out[t] = argmax(logits[t, :]) as int32; ties go to the lowest index
// (numpy's first occurrence). NaN entries are ignored.
#include "common.cuh"

__device__ __forceinline__ void argmax_pick(float& best, int& idx, float v, int i) {
  if (v > best || (v == best && i < idx)) { best = v; idx = i; }
}

template <class D, int V>
__device__ __forceinline__ void argmax_body(const typename D::T* __restrict__ logits, int* __restrict__ out, int n) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const i64 row = blockIdx.x;
  const typename D::T* x = logits + row * n;
  float best = -__int_as_float(0x7f800000);
  int idx = 0x7fffffff;
  for (int i = threadIdx.x * V; i < n; i += blockDim.x * V) {
    float a[V];
    load_f<D, V>(x + i, a);
#pragma unroll
    for (int j = 0; j < V; ++j) argmax_pick(best, idx, a[j], i + j);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float b2 = __shfl_xor_sync(0xffffffffu, best, o);
    const int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
    argmax_pick(best, idx, b2, i2);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  if (lane == 0) { sv[warp] = best; si[warp] = idx; }
  __syncthreads();
  if (warp == 0) {
    best = lane < nw ? sv[lane] : -__int_as_float(0x7f800000);
    idx = lane < nw ? si[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float b2 = __shfl_xor_sync(0xffffffffu, best, o);
      const int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
      argmax_pick(best, idx, b2, i2);
    }
    if (lane == 0) out[row] = idx == 0x7fffffff ? 0 : idx;
  }
}

#define ARGMAX(NAME, TAG, V)                                                          \
  extern "C" __global__ void NAME(const TAG::T* logits, int* out, int n) {            \
    CG_PDL_ENTRY();                                                                   \
    argmax_body<TAG, V>(logits, out, n);                                              \
  }
ARGMAX(argmax_f16_v8, F16, 8)
ARGMAX(argmax_f16_v1, F16, 1)
ARGMAX(argmax_bf16_v8, BF16, 8)
ARGMAX(argmax_bf16_v1, BF16, 1)
ARGMAX(argmax_f32_v4, F32, 4)
ARGMAX(argmax_f32_v1, F32, 1)

// ---------------------------------------------------------------------------------------
// Sampling with temperature, top-k and top-p, one block per row, exactly reproducible.
// The NumPy reference is cgraph.kernels.random_reference.sample_row; both compute the same
// integers, bit for bit:
//   m = the row's largest logit (NaN ignored); x = (logit - m) * (1 / temperature) (float32,
//   rounded each step); each token's weight q = trunc(e^x * 2^40) as u64 (e^x = 2^(x log2 e) by an
//   explicit polynomial in round-to-nearest float32 steps, 0 below 2^-30), so every sum and
//   comparison after it is integer arithmetic, independent of the reduction order;
//   top-k keeps tokens whose ordered logit key is >= the k-th largest key (ties kept);
//   top-p then keeps tokens whose q is >= the largest threshold t with
//   mass(q >= t) >= ceil(top_p * mass) (ties kept); both thresholds are found by a radix
//   search (8 bits a pass, counts or masses in a 256-bin histogram), never a sort;
//   the token is the first id, in id order, whose running mass of kept tokens exceeds
//   r = floor(mass_kept * x64 / 2^64), x64 = 64 bits of Philox4x32-10 (words 0 and 1).
// temperature <= 0 (or NaN) is greedy: the argmax above, bit for bit. A row whose kept mass
// is 0 (every logit NaN or infinite) falls back to the argmax.
#include "philox.cuh"

typedef unsigned long long u64;

#define CG_SAMPLE_TAG 0x53414d50u  // "SAMP": counter word 3 of the per-position draws

__device__ __forceinline__ u32 ordered_key(float v) {
  const u32 b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// trunc(2^x * 2^40) for x <= 0 (0 when x < -30 / 2^x below 2^-30, or NaN).
__device__ __forceinline__ u64 exp_weight(float x) {
  const float y = __fmul_rn(x, 0x1.715476p+0f);  // log2(e) in float32
  if (!(y >= -30.0f)) return 0ull;
  const float n = floorf(y);
  const float f = __fsub_rn(y, n);  // exact, in [0, 1)
  // 2^f = sum_k (f ln2)^k / k!, k <= 8 (relative error < 2e-7); the float32 coefficients
  // are written in hex so the reference uses the very same values
  float p = 0x1.62c022p-20f;
  p = __fadd_rn(__fmul_rn(p, f), 0x1.ffcbfcp-17f);
  p = __fadd_rn(__fmul_rn(p, f), 0x1.430912p-13f);
  p = __fadd_rn(__fmul_rn(p, f), 0x1.5d87fep-10f);
  p = __fadd_rn(__fmul_rn(p, f), 0x1.3b2ab6p-7f);
  p = __fadd_rn(__fmul_rn(p, f), 0x1.c6b08ep-5f);
  p = __fadd_rn(__fmul_rn(p, f), 0x1.ebfbep-3f);
  p = __fadd_rn(__fmul_rn(p, f), 0x1.62e43p-1f);
  p = __fadd_rn(__fmul_rn(p, f), 1.0f);
  return __float2ull_rz(ldexpf(p, (int)n + 40));
}

__device__ __forceinline__ u64 block_sum_u64(u64 v, u64* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : 0ull;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : -__int_as_float(0x7f800000);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The largest t with sum(weight of elements whose key >= t) >= target (0 < target <= the
// total weight), keys < 2^(top_shift + 8). elem(i, key, w) gives element i's key and weight.
template <class F>
__device__ u64 radix_threshold(int n, u64 target, int top_shift, F elem, u64* hist, u64* sh) {
  u64 prefix = 0, mask = 0, above = 0;
  for (int shift = top_shift; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    // a thread's elements mostly fall into one bin (most weights are far below the top
    // one): it adds runs of equal bins in a register and flushes a run with one atomic,
    // instead of every element contending for the same shared-memory word
    int run_bin = -1;
    u64 run = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      u64 key, w;
      elem(i, key, w);
      if (w == 0 || (key & mask) != prefix) continue;
      const int b = (int)((key >> shift) & 255);
      if (b != run_bin) {
        if (run != 0) atomicAdd(&hist[run_bin], run);
        run_bin = b;
        run = 0;
      }
      run += w;
    }
    if (run != 0) atomicAdd(&hist[run_bin], run);
    __syncthreads();
    if (threadIdx.x == 0) {
      int b = 255;
      for (; b > 0; --b) {
        if (above + hist[b] >= target) break;
        above += hist[b];
      }
      sh[0] = prefix | ((u64)b << shift);
      sh[1] = above;
    }
    __syncthreads();
    prefix = sh[0];
    above = sh[1];
    mask |= 255ull << shift;
    __syncthreads();
  }
  return prefix;
}

template <class D, int V>
__device__ void sample_body(const typename D::T* __restrict__ logits, int* __restrict__ out, int n,
                            float temperature, float top_p, int top_k, u32 c0, u32 c1, u32 c2, u32 c3,
                            u32 k0, u32 k1) {
  if (!(temperature > 0.0f)) {  // greedy
    argmax_body<D, V>(logits, out, n);
    return;
  }
  __shared__ float redf[32];
  __shared__ u64 red[32];
  __shared__ u64 hist[256];
  __shared__ u64 sh[2];
  const i64 row = blockIdx.x;
  const typename D::T* x = logits + row * n;
  // pass 1: the largest logit and how many are not NaN
  float m = -__int_as_float(0x7f800000);
  u64 valid = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = D::to_f(x[i]);
    if (v == v) { m = fmaxf(m, v); ++valid; }
  }
  m = block_max(m, redf);
  valid = block_sum_u64(valid, red);
  const float inv_t = __fdiv_rn(1.0f, temperature);
  // top-k: the k-th largest ordered key (0: no restriction)
  u64 kth = 0;
  if (top_k > 0 && (u64)top_k < valid) {
    kth = radix_threshold(n, (u64)top_k, 24, [&](int i, u64& key, u64& w) {
      const float v = D::to_f(x[i]);
      key = ordered_key(v);
      w = (v == v) ? 1ull : 0ull;
    }, hist, sh);
  }
  auto weight_k = [&](int i) -> u64 {  // q of a token top-k keeps, else 0
    const float v = D::to_f(x[i]);
    if (!(v == v) || (u64)ordered_key(v) < kth) return 0ull;
    return exp_weight(__fmul_rn(__fsub_rn(v, m), inv_t));
  };
  u64 mass = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) mass += weight_k(i);
  mass = block_sum_u64(mass, red);
  // top-p: the weight threshold
  u64 tq = 0;
  if (top_p < 1.0f && mass > 0) {
    u64 target = (u64)ceil(__dmul_rn((double)top_p, __ull2double_rn(mass)));
    if (target > mass) target = mass;
    if (target == 0) target = 1;
    tq = radix_threshold(n, target, 40, [&](int i, u64& key, u64& w) {
      w = weight_k(i);
      key = w;
    }, hist, sh);
  }
  // inverse CDF over the kept tokens, in id order: thread t owns the ids [t*C, (t+1)*C)
  const int chunk = (n + blockDim.x - 1) / blockDim.x;
  const int lo = min(n, (int)threadIdx.x * chunk), hi = min(n, lo + chunk);
  u64 mine = 0;
  for (int i = lo; i < hi; ++i) {
    const u64 w = weight_k(i);
    if (w >= tq) mine += w;
  }
  // exclusive scan of `mine` over the block (integers: any order gives the same sums)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  u64 inc = mine;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const u64 y = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += y;
  }
  __syncthreads();
  if (lane == 31) red[warp] = inc;
  __syncthreads();
  if (threadIdx.x == 0) {
    u64 run = 0;
    for (int w = 0; w < nw; ++w) { const u64 t = red[w]; red[w] = run; run += t; }
    sh[0] = run;
  }
  __syncthreads();
  const u64 kept = sh[0];
  if (kept == 0) {  // nothing finite to sample from
    __syncthreads();
    argmax_body<D, V>(logits, out, n);
    return;
  }
  const u64 excl = red[warp] + inc - mine;
  const Philox4 bits = philox4x32_10(c0, c1, c2, c3, k0, k1);
  const u64 x64 = (u64)bits.w[0] | ((u64)bits.w[1] << 32);
  const u64 r = __umul64hi(kept, x64);
  if (mine != 0 && excl <= r && r < excl + mine) {
    u64 run = excl;
    for (int i = lo; i < hi; ++i) {
      const u64 w = weight_k(i);
      if (w < tq) continue;
      run += w;
      if (run > r) { out[row] = i; break; }
    }
  }
}

// Per-row parameters (the engine): params[row] = [temperature bits, top_p bits, top_k, seed lo,
// seed hi] (cgraph.core.sampling.pack_sampling); the draw's counter is (positions[row], 0, 0,
// "SAMP"), its key the seed: a token depends on its request's seed and position only.
#define SAMPLE_ROWS(NAME, TAG, V)                                                                     \
  extern "C" __global__ void NAME(const TAG::T* logits, const int* params, const int* positions,       \
                                  int* out, int n) {                                                   \
    CG_PDL_ENTRY();                                                                                    \
    const int* p = params + (i64)blockIdx.x * 5;                                                       \
    sample_body<TAG, V>(logits, out, n, __int_as_float(p[0]), __int_as_float(p[1]), p[2],              \
                        (u32)positions[blockIdx.x], 0u, 0u, CG_SAMPLE_TAG, (u32)p[3], (u32)p[4]);      \
  }
// One generator for every row (cgraph.kernels.random.Generator.sample): row r draws counter
// block (offset + r) of the generator's stream; philox_advance moves the offset on by the rows.
#define SAMPLE_GEN(NAME, TAG, V)                                                                      \
  extern "C" __global__ void NAME(const TAG::T* logits, const u32* state, int* out, int n,             \
                                  float temperature, float top_p, int top_k) {                         \
    CG_PDL_ENTRY();                                                                                    \
    const u64 b = ((u64)state[2] | ((u64)state[3] << 32)) + blockIdx.x;                                \
    sample_body<TAG, V>(logits, out, n, temperature, top_p, top_k, (u32)b, (u32)(b >> 32), 0u, 0u,     \
                        state[0], state[1]);                                                           \
  }
SAMPLE_ROWS(sample_f16_v8, F16, 8)
SAMPLE_ROWS(sample_f16_v1, F16, 1)
SAMPLE_ROWS(sample_bf16_v8, BF16, 8)
SAMPLE_ROWS(sample_bf16_v1, BF16, 1)
SAMPLE_ROWS(sample_f32_v4, F32, 4)
SAMPLE_ROWS(sample_f32_v1, F32, 1)
SAMPLE_GEN(sample_gen_f16_v8, F16, 8)
SAMPLE_GEN(sample_gen_f16_v1, F16, 1)
SAMPLE_GEN(sample_gen_bf16_v8, BF16, 8)
SAMPLE_GEN(sample_gen_bf16_v1, BF16, 1)
SAMPLE_GEN(sample_gen_f32_v4, F32, 4)
SAMPLE_GEN(sample_gen_f32_v1, F32, 1)
