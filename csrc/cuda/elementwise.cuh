// Element math shared by the layer and the gate kernels: fp32 in registers. f = relu (ACT 0):
// PReLU semantics, unchanged. Any other f (ACT = common/act_codes.h): the forms of the CPU
// (csrc/cpu/act_math.h) and Triton (ops/backends/triton/common.py) kernels -- switch points as
// PyTorch's own backward (relu6: f' = 0 at 0 and 6; hardswish: 0 at -3, 1 at 3), NaN kept, tanh
// through the sigmoid (1 + tanh(u) = 2 sigmoid(2u)), h = f - x = -x q(x) with h = 0 where q = 0
// (x = +inf gives 0, not inf * 0). CUDA's full-precision erff and expf (<= 2 ulp; expf's PTX holds
// an ex2.approx after an exact range reduction), IEEE division and reciprocal; never __expf or
// __fdividef.
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

// VEC consecutive elements, aligned to their size (16 bytes for the vectorised instantiation).
// Index expressions are written as VEC * (...) so nvcc sees the alignment: `r * G + cv * VEC`
// made it split the 16-byte stores of the column kernels (tests/test_cuda_build.py checks).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Packed {
  T v[VEC];
};

// relu(-x) written so NaN propagates (x > 0 is false for NaN).
__device__ __forceinline__ float neg_part(float x) { return x > 0.0f ? 0.0f : -x; }
// PReLU with slope 1 - alpha: NaN propagates, -inf stays -inf.
__device__ __forceinline__ float fwd_elem(float x, float om) { return x > 0.0f ? x : x * om; }
// Slope 1 at x = +-0 (autograd of relu), 1 - alpha below zero and at NaN (as eager autograd).
__device__ __forceinline__ float bwd_elem(float x, float dy, float om) { return x >= 0.0f ? dy : dy * om; }

constexpr float kRsqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;
constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi), gelu's tanh form
constexpr float kKappa = 0.044715f;

// 1 / v correctly rounded (rcp.rn: IEEE division's result without its out-of-line slow path, whose
// call spilled registers in the 8-wide backward kernels).
__device__ __forceinline__ float recip(float v) { return __frcp_rn(v); }
__device__ __forceinline__ float sig(float v) { return recip(1.0f + expf(-v)); }

// f(x) for ACT >= 1; neg: leaky_relu's slope. Comparisons written so NaN falls through to x.
template <int ACT>
__device__ __forceinline__ float act_f(float x, float neg) {
  if constexpr (ACT == 1) {
    return x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x);
  } else if constexpr (ACT == 2) {
    return x > 0.0f ? x : x * neg;
  } else if constexpr (ACT == 3) {
    return x * 0.5f * (1.0f + erff(x * kRsqrt2));
  } else if constexpr (ACT == 4) {
    return x * sig(2.0f * kBeta * (x + kKappa * x * x * x));
  } else if constexpr (ACT == 5) {
    return x / (1.0f + expf(-x));
  } else {
    return x * (x < -3.0f ? 0.0f : (x > 3.0f ? 6.0f : x + 3.0f)) / 6.0f;
  }
}

// y = a f(x) + (1 - a) x, exactly f where 1 - a = 0 and x where a = 0 (also at x = +-inf, where
// the zero-weight term would be 0 * inf); a = 1 - om in fp32.
template <int ACT>
__device__ __forceinline__ float gate_y(float x, float om, float neg) {
  if constexpr (ACT == 0) {
    return fwd_elem(x, om);
  } else {
    const float a = 1.0f - om, f = act_f<ACT>(x, neg);
    return om == 0.0f ? f : (a == 0.0f ? x : a * f + om * x);
  }
}

// The backward's two results, dx = dy (1 - a + a f'(x)) (dy itself where a = 0) and dy h(x), the
// term dgamma sums; the smooth f share one erf (gelu) or one exp (silu, gelu_tanh) between f'
// and h, as the CPU kernels do.
template <int ACT>
__device__ __forceinline__ void gate_bwd(float x, float dy, float om, float neg, float& dx, float& contrib) {
  if constexpr (ACT == 0) {
    dx = bwd_elem(x, dy, om);
    contrib = dy * neg_part(x);
    return;
  } else {
    const float a = 1.0f - om;
    float df, h;
    if constexpr (ACT == 1) {  // f' = 0 at the switch points, 1 at NaN (as hardtanh_backward)
      df = (x <= 0.0f || x >= 6.0f) ? 0.0f : 1.0f;
      h = act_f<1>(x, neg) - x;
    } else if constexpr (ACT == 2) {
      df = x > 0.0f ? 1.0f : neg;
      h = x > 0.0f ? 0.0f : (neg - 1.0f) * x;
    } else if constexpr (ACT == 6) {  // 0 up to -3 (included), x/3 + 1/2 below 3, 1 from 3 and at NaN
      df = x <= -3.0f ? 0.0f : (x < 3.0f ? x / 3.0f + 0.5f : 1.0f);
      const float q = x >= 3.0f ? 0.0f : (x <= -3.0f ? 1.0f : (3.0f - x) / 6.0f);
      h = q == 0.0f ? 0.0f : -x * q;
    } else {
      float q;
      if constexpr (ACT == 3) {
        const float e = erff(x * kRsqrt2);
        q = 0.5f * (1.0f - e);
        df = 0.5f * (1.0f + e) + x * kInvSqrt2Pi * expf(-0.5f * x * x);
      } else {  // silu: v = x; gelu_tanh: v = 2u; s = sigma(v), q = sigma(-v) = e s, e = exp(-v)
        const float v = ACT == 5 ? x : 2.0f * kBeta * (x + kKappa * x * x * x);
        const float e = expf(-v), s = recip(1.0f + e);
        q = s == 0.0f ? 1.0f : e * s;
        if constexpr (ACT == 5) {
          df = s * (1.0f + x * q);
        } else {  // t = tanh(v / 2) = s - q
          const float t = s - q;
          df = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kBeta * (1.0f + 3.0f * kKappa * x * x);
        }
      }
      h = q == 0.0f ? 0.0f : -x * q;
    }
    dx = dy * (a == 0.0f ? 1.0f : om + a * df);
    contrib = dy * h;
  }
}

}  // namespace alphakern
