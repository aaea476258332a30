// What the CPU kernels (gate.cpp: the gates; bn_gate.cpp: BatchNorm + gate) share: kStep
// elements of T as kN fp32 vectors in registers, and one step of the gate's forward and backward
// on them (f = relu, ACT 0: PReLU semantics; any other f: act_math.h), and the dtype x f dispatch.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "../common/act_codes.h"
#include "act_math.h"

#include <algorithm>
#include <cstdint>
#include <tuple>

namespace alphakern {

// kStep elements of T in registers as kN fp32 vectors.
template <typename T>
struct Io {  // at::Half, at::BFloat16
  using V = at::vec::Vectorized<T>;
  static constexpr int kN = 2;
  static constexpr int64_t kStep = V::size();
  static void load(const T* p, fVec* v) { std::tie(v[0], v[1]) = at::vec::convert_to_float<T>(V::loadu(p)); }
  static void load(const T* p, fVec* v, int64_t n) {
    std::tie(v[0], v[1]) = at::vec::convert_to_float<T>(V::loadu(p, n));
  }
  static void store(T* p, const fVec* v) { at::vec::convert_from_float<T>(v[0], v[1]).store(p); }
  static void store(T* p, const fVec* v, int64_t n) {
    at::vec::convert_from_float<T>(v[0], v[1]).store(p, n);
  }
};

template <>
struct Io<float> {
  static constexpr int kN = 1;
  static constexpr int64_t kStep = fVec::size();
  static void load(const float* p, fVec* v) { v[0] = fVec::loadu(p); }
  static void load(const float* p, fVec* v, int64_t n) { v[0] = fVec::loadu(p, n); }
  static void store(float* p, const fVec* v) { v[0].store(p); }
  static void store(float* p, const fVec* v, int64_t n) { v[0].store(p, n); }
};

constexpr int64_t kSerialBelow = 32768;  // elements: smaller tensors stay on the calling thread

inline int64_t divup(int64_t a, int64_t b) { return (a + b - 1) / b; }

// fn(lo, hi) over work items [0, items): on this thread for a small tensor, else at::parallel_for
// (the items' bounds, not the threads, decide every sum's order).
template <typename F>
void run_items(int64_t items, int64_t numel, const F& fn) {
  if (numel < kSerialBelow) {
    fn(0, items);
  } else {
    at::parallel_for(0, items, 1, fn);
  }
}

// How many of the n (< kStep) tail elements fall in fp32 vector k.
inline int64_t part(int64_t n, int k) { return std::clamp<int64_t>(n - k * fVec::size(), 0, fVec::size()); }

// One step of the forward on kN vectors, in place: s holds 1 - alpha, ns leaky_relu's slope.
template <int N, int ACT, bool kBlend = true>
inline void fwd_math(fVec* v, const fVec* s, const fVec& ns) {
  const fVec zero(0.f);
  for (int k = 0; k < N; ++k) {
    if constexpr (ACT == 0) {
      v[k] = fVec::blendv(v[k] * s[k], v[k], v[k] > zero);
    } else {
      v[k] = gate_y<ACT, kBlend>(v[k], s[k], ns);
    }
  }
}

// One step of the backward on kN vectors: dx into g, dy * (f(x) - x) returned in g's partner
// (relu: dy * relu(-x)).
template <int N, int ACT>
inline void bwd_math(fVec* g, const fVec* xv, const fVec* s, fVec* contrib, const fVec& ns) {
  const fVec zero(0.f);
  for (int k = 0; k < N; ++k) {
    if constexpr (ACT == 0) {
      const fVec neg = fVec::blendv(zero - xv[k], zero, xv[k] > zero);  // relu(-x), NaN kept
      contrib[k] = g[k] * neg;
      g[k] = fVec::blendv(g[k] * s[k], g[k], xv[k] >= zero);  // slope 1 at +-0
    } else {
      gate_bwd<ACT>(xv[k], g[k], s[k], ns, g[k], contrib[k]);
    }
  }
}

// f(T{}, std::integral_constant<int, ACT>{}) for the dtypes check_x lets through and the
// activation codes (common/act_codes.h): one instantiation of each kernel per pair.
template <typename F>
void dispatch(at::ScalarType t, int64_t act, const F& f) {
  const auto with = [&](auto tag) { with_activation(act, "cpu", [&](auto code) { f(tag, code); }); };
  switch (t) {
    case at::kFloat:
      return with(float{});
    case at::kHalf:
      return with(at::Half{});
    case at::kBFloat16:
      return with(at::BFloat16{});
    default:
      TORCH_CHECK(false, "alphakern (cpu backend): unsupported dtype ", t);
  }
}

}  // namespace alphakern
