// The element math of the gate G(x) = x + alpha * (f(x) - x) for f other than relu, on fp32
// vectors: f, f' and h = f - x per activation code ACT (alphakern/ops/core/activations.py:
// 1 relu6, 2 leaky_relu, 3 gelu, 4 gelu_tanh, 5 silu, 6 hardswish), the forms of the Triton
// kernels (ops/backends/triton/common.py): switch points as PyTorch's own backward (relu6: f' = 0
// at 0 and 6; hardswish: 0 at -3, 1 at 3), NaN kept in f and h, tanh through the sigmoid
// (1 + tanh(u) = 2 sigmoid(2u)), and h = -x * q(x) with h = 0 where q = 0, so x = +inf gives 0,
// not inf * 0. exp is Sleef's (1 ulp) where ATen builds with it; erf is ATen's polynomial, the
// one PyTorch's own CPU GELU kernel uses.
#pragma once

#include <ATen/cpu/vec/vec.h>

namespace alphakern {

using fVec = at::vec::Vectorized<float>;

inline fVec sig(const fVec& v) { return fVec(1.f) / (fVec(1.f) + v.neg().exp()); }

constexpr float kRsqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;
constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi), gelu's tanh form
constexpr float kKappa = 0.044715f;

template <int ACT>
inline fVec act_f(const fVec& x, const fVec& neg) {
  const fVec zero(0.f);
  if constexpr (ACT == 1) {
    const fVec six(6.f);
    return fVec::blendv(fVec::blendv(x, zero, x < zero), six, x > six);
  } else if constexpr (ACT == 2) {
    return fVec::blendv(x * neg, x, x > zero);
  } else if constexpr (ACT == 3) {
    return x * fVec(0.5f) * (fVec(1.f) + (x * fVec(kRsqrt2)).erf());
  } else if constexpr (ACT == 4) {
    const fVec u = fVec(kBeta) * (x + fVec(kKappa) * x * x * x);
    return x * sig(fVec(2.f) * u);
  } else if constexpr (ACT == 5) {
    return x / (fVec(1.f) + x.neg().exp());
  } else {
    const fVec r = fVec::blendv(fVec::blendv(x + fVec(3.f), zero, x < fVec(-3.f)), fVec(6.f), x > fVec(3.f));
    return x * r / fVec(6.f);
  }
}

template <int ACT>
inline fVec act_df(const fVec& x, const fVec& neg) {
  const fVec zero(0.f), one(1.f);
  if constexpr (ACT == 1) {  // 1 at NaN (no comparison holds), as hardtanh_backward
    return fVec::blendv(one, zero, (x <= zero) | (x >= fVec(6.f)));
  } else if constexpr (ACT == 2) {
    return fVec::blendv(neg, one, x > zero);
  } else if constexpr (ACT == 3) {
    const fVec cdf = fVec(0.5f) * (one + (x * fVec(kRsqrt2)).erf());
    return cdf + x * fVec(kInvSqrt2Pi) * (fVec(-0.5f) * x * x).exp();
  } else if constexpr (ACT == 4) {
    const fVec t = fVec(2.f) * sig(fVec(2.f * kBeta) * (x + fVec(kKappa) * x * x * x)) - one;
    return fVec(0.5f) * (one + t) +
           fVec(0.5f) * x * (one - t * t) * fVec(kBeta) * (one + fVec(3.f * kKappa) * x * x);
  } else if constexpr (ACT == 5) {
    const fVec s = sig(x);
    return s * (one + x * (one - s));
  } else {  // 0 up to -3 (included), x/3 + 1/2 below 3, 1 from 3 and at NaN
    const fVec mid = x / fVec(3.f) + fVec(0.5f);
    return fVec::blendv(fVec::blendv(one, mid, x < fVec(3.f)), zero, x <= fVec(-3.f));
  }
}

template <int ACT>
inline fVec act_h(const fVec& x, const fVec& neg) {
  const fVec zero(0.f), one(1.f);
  if constexpr (ACT == 1) {
    return act_f<ACT>(x, neg) - x;
  } else if constexpr (ACT == 2) {
    return fVec::blendv((neg - one) * x, zero, x > zero);
  } else {
    fVec q;
    if constexpr (ACT == 3) {
      q = fVec(0.5f) * (one - (x * fVec(kRsqrt2)).erf());
    } else if constexpr (ACT == 4) {
      q = one / (one + (fVec(2.f * kBeta) * (x + fVec(kKappa) * x * x * x)).exp());
    } else if constexpr (ACT == 5) {
      q = one / (one + x.exp());
    } else {
      q = fVec::blendv(fVec::blendv((fVec(3.f) - x) / fVec(6.f), one, x <= fVec(-3.f)), zero, x >= fVec(3.f));
    }
    return fVec::blendv(zero - x * q, zero, q == zero);
  }
}

// y = a f(x) + (1 - a) x, with f where 1 - a = 0 and x where a = 0 (exact at a = 1 and 0, also at
// x = +-inf where the zero-weight term would be 0 * inf); a = 1 - om in fp32 (om: 1 - alpha,
// rounded once from fp64; a's own rounding, at most 2^-25, stays below y's). The blends change
// only lanes whose gate is saturated (a or om exactly 0): kBlend = false, for spans whose caller
// found no such gate (``saturated``), gives the same bits without them — they cost a fifth of the
// forward of a smooth f with a weight per element.
template <int ACT, bool kBlend = true>
inline fVec gate_y(const fVec& x, const fVec& om, const fVec& neg) {
  const fVec a = fVec(1.f) - om, f = act_f<ACT>(x, neg);
  if constexpr (!kBlend) {
    return a * f + om * x;
  } else {
    return fVec::blendv(fVec::blendv(a * f + om * x, x, a == fVec(0.f)), f, om == fVec(0.f));
  }
}

// Does any of the n slopes (om = 1 - alpha) make a gate saturated, a = 1 - om or om exactly 0?
inline bool saturated(const float* om, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (om[i] == 0.f || 1.f - om[i] == 0.f) return true;
  }
  return false;
}

// dy (1 - a + a f'(x)); dy itself where a = 0.
template <int ACT>
inline fVec gate_dx(const fVec& x, const fVec& dy, const fVec& om, const fVec& neg) {
  const fVec a = fVec(1.f) - om;
  return dy * fVec::blendv(om + a * act_df<ACT>(x, neg), fVec(1.f), a == fVec(0.f));
}

// The backward's two results at once, (dx, dy * h), sharing the transcendental of the smooth f:
// one erf for gelu (its Phi and q = 1 - Phi), one exp for silu and gelu's tanh form (sigma(v)
// = 1 / (1 + e), q = sigma(-v) = e * sigma(v) with e = exp(-v), and q = 1 where e = inf).
template <int ACT>
inline void gate_bwd(const fVec& x, const fVec& dy, const fVec& om, const fVec& neg, fVec& dx,
                     fVec& contrib) {
  if constexpr (ACT == 3 || ACT == 4 || ACT == 5) {
    const fVec zero(0.f), one(1.f), a = one - om;
    fVec df, q;
    if constexpr (ACT == 3) {
      const fVec e = (x * fVec(kRsqrt2)).erf();
      q = fVec(0.5f) * (one - e);
      df = fVec(0.5f) * (one + e) + x * fVec(kInvSqrt2Pi) * (fVec(-0.5f) * x * x).exp();
    } else {
      const fVec v = ACT == 5 ? x : fVec(2.f * kBeta) * (x + fVec(kKappa) * x * x * x);
      const fVec e = v.neg().exp(), s = one / (one + e);
      q = fVec::blendv(e * s, one, s == zero);
      if constexpr (ACT == 5) {
        df = s * (one + x * q);
      } else {  // t = tanh(v / 2) = s - q
        const fVec t = s - q;
        df = fVec(0.5f) * (one + t) +
             fVec(0.5f) * x * (one - t * t) * fVec(kBeta) * (one + fVec(3.f * kKappa) * x * x);
      }
    }
    contrib = dy * fVec::blendv(zero - x * q, zero, q == zero);
    dx = dy * fVec::blendv(om + a * df, one, a == zero);
  } else {
    contrib = dy * act_h<ACT>(x, neg);
    dx = gate_dx<ACT>(x, dy, om, neg);
  }
}

}  // namespace alphakern
