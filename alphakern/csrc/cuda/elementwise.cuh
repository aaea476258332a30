// Element math shared by the layer and the gate kernels: fp32 in registers, PReLU semantics.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace alphakern {

template <typename T>
__device__ __forceinline__ float to_f(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float to_f(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_f(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ T from_f(float v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half from_f(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f(float v) {
  return __float2bfloat16_rn(v);
}

// relu(-x) written so NaN propagates (x > 0 is false for NaN).
__device__ __forceinline__ float neg_part(float x) { return x > 0.0f ? 0.0f : -x; }
// PReLU with slope 1 - alpha: NaN propagates, -inf stays -inf.
__device__ __forceinline__ float fwd_elem(float x, float om) { return x > 0.0f ? x : x * om; }
// Slope 1 at x = +-0 (autograd of relu), 1 - alpha below zero and at NaN (as eager autograd).
__device__ __forceinline__ float bwd_elem(float x, float dy, float om) { return x >= 0.0f ? dy : dy * om; }

}  // namespace alphakern
