// The fused BatchNorm + gate op in one native call per direction -- alphakern_C::bn_gate (forward)
// and alphakern_C::bn_gate_backward -- around a backend's passes P (csrc/cuda/bn_gate.cu; the CPU
// library does the same on host arrays, csrc/cpu/bn_gate.cpp, and shares the layout helpers): the kernels'
// layout of x, the fp32 per-channel parameters, the alpha terms, the statistics, the centring of the backward
// and the affine and gate gradients. This host arithmetic ran in Python as ~30 small tensor ops per call; on
// ResNet-20's small activations that cost about as much as the kernels saved
// (alphakern/ops/backends/native/bn_gate.py).
//
// P provides, each on x's device:
//   stats(xd) -> (mean, var)                      the batch's, biased, fp32 [C]
//   terms(gamma, nu) -> (1 - alpha fp32, dalpha/dgamma fp64), gamma's shape
//   fwd(xd, r, mean, invstd, w, b, slopes, act, neg) -> y                   (r undefined: no residual)
//   reduce(dyd, xd, r, ...) -> [3, C] sums of dz, dz * xhat, dy * (f(s) - s)
//   apply(dyd, xd, r, ..., ca, cb, act, neg) -> (dx, dr)                    (dr undefined without r)
#pragma once

#include <ATen/ATen.h>

#include "checks.h"

#include <algorithm>
#include <optional>
#include <tuple>

namespace alphakern {
namespace bn_host {

using OptT = std::optional<at::Tensor>;

// x as the kernels take it: contiguous ([N, C, S] rows of S) or 4-D channels_last, gathered only when
// it is neither (ops/core/batchnorm.py's kernel_layout).
inline at::Tensor kernel_layout(const at::Tensor& x) {
  at::Tensor xd = x.is_non_overlapping_and_dense() ? x : like(x, at::empty_like(x));
  const bool cl = xd.dim() == 4 && !xd.is_contiguous() && xd.is_contiguous(at::MemoryFormat::ChannelsLast);
  return cl || xd.is_contiguous() ? xd : xd.contiguous();
}

// t (computed in the kernels' layout of x) laid out as empty_like(x), as the fake kernels say.
inline at::Tensor as_x(const at::Tensor& t, const at::Tensor& x) {
  return t.strides() == x.strides() ? t : like(t, at::empty_like(x));
}

// BN's weight and bias as contiguous fp32 [C] (ones and zeros without affine).
inline std::pair<at::Tensor, at::Tensor> affine(const OptT& weight, const OptT& bias, int64_t c,
                                                const at::Tensor& ref) {
  const auto f32 = ref.options().dtype(at::kFloat);
  at::Tensor w = weight ? weight->detach().to(at::kFloat).contiguous() : at::ones({c}, f32);
  at::Tensor b = bias ? bias->detach().to(at::kFloat).contiguous() : at::zeros({c}, f32);
  return {w, b};
}

// (1 - alpha per channel as fp32 [C] -- a layer gate's repeated --, dalpha/dgamma in gamma's shape).
template <class P>
std::pair<at::Tensor, at::Tensor> slopes_of(const at::Tensor& gamma, const at::Tensor& nu, int64_t c) {
  auto [om, dadg] = P::terms(gamma.detach(), nu.detach());
  return {om.reshape({-1}).expand({c}).contiguous(), dadg};
}

// t (the residual or dy: x's shape and dtype, any layout) laid out as xd, the kernels' x; a
// shape that would only broadcast is refused, not copied into place.
inline at::Tensor laid_out(const at::Tensor& t, const at::Tensor& xd, const char* name) {
  TORCH_CHECK(t.sizes() == xd.sizes() && t.scalar_type() == xd.scalar_type() && t.device() == xd.device(),
              "bn_gate: ", name, " must have x's shape ", xd.sizes(), ", dtype ", xd.scalar_type(),
              " and device ", xd.device(), ", got ", t.sizes(), " ", t.scalar_type(), " on ", t.device());
  return like(t, xd);
}

inline at::Tensor residual_of(const OptT& residual, const at::Tensor& xd) {
  return residual ? laid_out(*residual, xd, "residual") : at::Tensor();
}

// (y, mean, biased var, invstd): the batch's statistics in training, else copies of the running ones.
template <class P>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
    const at::Tensor& x, const OptT& residual, const OptT& weight, const OptT& bias, const OptT& running_mean,
    const OptT& running_var, const at::Tensor& gamma, const at::Tensor& nu, bool training, double eps,
    int64_t act, double neg) {
  TORCH_CHECK(x.dim() >= 2, "bn_gate: x must have a batch and a channel dimension, got shape ", x.sizes());
  const int64_t c = x.size(1);
  const at::Tensor xd = kernel_layout(x);
  at::Tensor mean, var;
  if (training) {
    std::tie(mean, var) = P::stats(xd);
  } else {
    TORCH_CHECK(running_mean && running_var,
                "bn_gate: running_mean and running_var are needed outside training, got none");
    mean = running_mean->detach().to(at::kFloat).clone();
    var = running_var->detach().to(at::kFloat).clone();
  }
  at::Tensor invstd = at::rsqrt(var + eps);
  auto [w, b] = affine(weight, bias, c, x);
  const at::Tensor slopes = slopes_of<P>(gamma, nu, c).first;
  const at::Tensor y = P::fwd(xd, residual_of(residual, xd), mean, invstd, w, b, slopes, act, neg);
  return {as_x(y, x), mean, var, invstd};
}

// (dx, dr -- empty [0] without a residual --, dweight and dbias in fp32, dgamma in gamma's dtype).
template <class P>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& dy, const at::Tensor& x, const OptT& residual, const OptT& weight, const OptT& bias,
    const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& gamma, const at::Tensor& nu,
    bool training, int64_t act, double neg) {
  TORCH_CHECK(x.dim() >= 2, "bn_gate_backward: x must have a batch and a channel dimension, got shape ",
              x.sizes());
  const int64_t c = x.size(1);
  const at::Tensor xd = kernel_layout(x), dyd = laid_out(dy, xd, "dy"), r = residual_of(residual, xd);
  auto [w, b] = affine(weight, bias, c, x);
  auto [slopes, dadg] = slopes_of<P>(gamma, nu, c);
  const at::Tensor sums = P::reduce(dyd, xd, r, mean, invstd, w, b, slopes, act, neg);  // [3, C]
  at::Tensor ca, cb;  // of dx = w invstd (dz - ca - xhat cb): the batch means of dz, dz xhat
  if (training) {
    const int64_t m = std::max<int64_t>(x.numel() / std::max<int64_t>(c, 1), 1);
    ca = (sums.select(0, 0) / m).to(at::kFloat);
    cb = (sums.select(0, 1) / m).to(at::kFloat);
  } else {
    ca = cb = at::zeros_like(mean);
  }
  auto [dx, dr] = P::apply(dyd, xd, r, mean, invstd, w, b, slopes, ca, cb, act, neg);
  const at::Tensor h = sums.select(0, 2);
  const at::Tensor gate_sums = gamma.numel() == 1 ? h.sum() : h;  // a layer gate: channels in order
  at::Tensor dgamma = (gate_sums.reshape(gamma.sizes()) * dadg).to(gamma.scalar_type());
  return {as_x(dx, x), residual ? as_x(dr, x) : x.new_empty({0}), sums.select(0, 1).to(at::kFloat),
          sums.select(0, 0).to(at::kFloat), dgamma};
}

}  // namespace bn_host
}  // namespace alphakern
