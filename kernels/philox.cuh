// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based generator. Ten rounds map a 128-bit counter and a 64-bit key to 128 random
// bits; the same (counter, key) always gives the same bits, so a draw needs no state but
// its counter. The NumPy reference is cgraph.kernels.random_reference.philox4x32.

struct Philox4 { u32 w[4]; };

__device__ __forceinline__ Philox4 philox4x32_10(u32 c0, u32 c1, u32 c2, u32 c3, u32 k0, u32 k1) {
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    if (r > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
    const u32 lo0 = 0xD2511F53u * c0, hi0 = __umulhi(0xD2511F53u, c0);
    const u32 lo1 = 0xCD9E8D57u * c2, hi1 = __umulhi(0xCD9E8D57u, c2);
    const u32 n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
  }
  Philox4 out;
  out.w[0] = c0; out.w[1] = c1; out.w[2] = c2; out.w[3] = c3;
  return out;
}

// A float in [0, 1) from 32 random bits: the top 24 bits times 2^-24 (exact in float32).
__device__ __forceinline__ float philox_unit_float(u32 w) { return (float)(w >> 8) * 5.9604644775390625e-08f; }
