// The alpha terms of a gate, for host (CPU kernels, CUDA host code) and device code alike:
// alpha = sigmoid((sigmoid(gamma) - 1/2) * nu), 1 - alpha as sigmoid(-z) (no cancellation near
// saturation), d alpha / d gamma = alpha (1 - alpha) nu sigmoid(gamma) sigmoid(-gamma). fp64 with
// IEEE exp and division, so 1 - alpha is correctly rounded once cast to fp32, where fp32 fast-math
// errors would be amplified by nu. The Python reference is alphakern/ops/core/alpha.py.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define ALPHAKERN_HD __host__ __device__ __forceinline__
#else
#define ALPHAKERN_HD inline
#endif

namespace alphakern {

struct Terms {
  float om;     // 1 - alpha, rounded once to fp32
  double dadg;  // d alpha / d gamma
};

ALPHAKERN_HD double sigmoid64(double v) { return 1.0 / (1.0 + exp(-v)); }

ALPHAKERN_HD Terms alpha_terms(double g, double n) {
  const double s = sigmoid64(g), z = (s - 0.5) * n;
  const double a = sigmoid64(z), om = sigmoid64(-z);
  return {static_cast<float>(om), a * om * n * s * sigmoid64(-g)};
}

}  // namespace alphakern
