// Device-side control flow: the condition of a CUDA conditional graph node (IF / WHILE),
// set from a device predicate by a one-thread kernel (cudaGraphSetConditional).
#include "common.cuh"

#ifndef CUDARTAPI
#define CUDARTAPI
#endif
typedef unsigned long long cudaGraphConditionalHandle;
extern "C" __device__ __cudart_builtin__ void CUDARTAPI cudaGraphSetConditional(cudaGraphConditionalHandle handle,
                                                                                 unsigned int value);

// set_condition: the node runs (again) when pred[0] != 0 and, with a bound (limit >= 0),
// fewer than `limit` iterations have run. step 0 starts the count (before the node),
// step 1 counts one more iteration (at the end of a WHILE body).
extern "C" __global__ void set_condition(cudaGraphConditionalHandle handle, const int* __restrict__ pred,
                                         int* __restrict__ count, int limit, int step) {
    CG_PDL_ENTRY();
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    const int c = step ? count[0] + 1 : 0;
    count[0] = c;
    const bool go = pred[0] != 0 && (limit < 0 || c < limit);
    cudaGraphSetConditional(handle, go ? 1u : 0u);
}
