// The CUDA kernels of alphakern's native ops (alphakern_C::alpha_relu_fwd, ...; schemas and fake
// kernels in alphakern/ops/backends/native/schema.py): checks, device guard, output allocation,
// then the launchers of layer_kernels.cu / gate_kernels.cu. These are backend kernels; autograd
// lives on the Python op alphakern::alpha_relu, which calls them for backend="cuda".

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/bn_gate_host.h"
#include "../common/checks.h"

#include <initializer_list>
#include <tuple>
#include <utility>

namespace alphakern {

// act, neg: f's code (common/act_codes.h) and leaky_relu's slope, checked by the launchers.
void launch_alpha_relu_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& gamma, const at::Tensor& nu,
                           int64_t act, double neg);
void launch_alpha_relu_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx, at::Tensor& dgamma,
                           const at::Tensor& gamma, const at::Tensor& nu, int64_t act, double neg);
void launch_gates_cols_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& slopes, int64_t A, int64_t G,
                           int64_t act, double neg);
at::Tensor launch_gates_cols_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                                 const at::Tensor& slopes, int64_t A, int64_t G, int64_t act, double neg);
void launch_gates_rows_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& slopes, int64_t C, int64_t B,
                           int64_t act, double neg);
at::Tensor launch_gates_rows_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                                 const at::Tensor& slopes, int64_t C, int64_t B, int64_t act, double neg);

// BatchNorm + gate (bn_gate.cu): x [N, C, ...] contiguous or channels_last; per-channel fp32 [C]; r
// (bn_add_gate_*: the residual, laid out as x; null for bn_gate_*) and dr, its gradient.
std::tuple<at::Tensor, at::Tensor> launch_bn_stats(const at::Tensor& x);
void launch_bn_gate_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& mean, const at::Tensor& invstd,
                        const at::Tensor& w, const at::Tensor& b, const at::Tensor& slopes, int64_t act,
                        double neg, const at::Tensor* r);
at::Tensor launch_bn_gate_bwd_reduce(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                     const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                                     const at::Tensor& slopes, int64_t act, double neg, const at::Tensor* r);
void launch_bn_gate_bwd_apply(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                              const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& w,
                              const at::Tensor& b, const at::Tensor& slopes, const at::Tensor& ca,
                              const at::Tensor& cb, int64_t act, double neg, const at::Tensor* r,
                              at::Tensor* dr);

namespace {

constexpr const Backend& kB = kCudaBackend;

bool fp32_or_fp64(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
}

// The kernels read 1-element fp32 or fp64 tensors; other dtypes (rare) are converted once.
at::Tensor kernel_scalar(const at::Tensor& t) { return (fp32_or_fp64(t) ? t : t.to(at::kFloat)).reshape({}); }

at::Tensor alpha_relu_fwd_cuda(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& nu,
                               int64_t act, double neg) {
  check_x(x, "x", kB);
  check_scalar(gamma, "gamma", x.device());
  check_scalar(nu, "nu", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);  // x's memory format; the fake kernel says the same
  const at::Tensor xd = like(x, y);
  launch_alpha_relu_fwd(xd, y, kernel_scalar(gamma), kernel_scalar(nu), act, neg);
  return y;
}

std::tuple<at::Tensor, at::Tensor> alpha_relu_bwd_cuda(const at::Tensor& dy, const at::Tensor& x,
                                                       const at::Tensor& gamma, const at::Tensor& nu,
                                                       int64_t act, double neg) {
  check_x(x, "x", kB);
  check_grad(dy, x, kB);
  check_scalar(gamma, "gamma", x.device());
  check_scalar(nu, "nu", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dx = at::empty_like(x);
  const at::Tensor xd = like(x, dx);
  const at::Tensor dyd = like(dy, dx);
  // written in gamma's dtype directly when the kernel can (fp32, fp64): no conversion kernel
  at::Tensor dgamma =
      at::empty({}, x.options().dtype(fp32_or_fp64(gamma) ? gamma.scalar_type() : at::kFloat));
  launch_alpha_relu_bwd(dyd, xd, dx, dgamma, kernel_scalar(gamma), kernel_scalar(nu), act, neg);
  return {dx, dgamma.to(gamma.scalar_type()).reshape(gamma.sizes())};
}

// Gates per channel/element: x (and dy) flat and contiguous in memory order, seen as [A, G]
// ("cols") or [A*C, B] ("rows") by the caller (alphakern/ops/core/gate_layout.py); slopes: fp32
// 1 - alpha per gate. Backward returns dx and the fp32 sums of dy*(f(x) - x) per gate.
at::Tensor gates_cols_fwd_cuda(const at::Tensor& x, const at::Tensor& slopes, int64_t A, int64_t G,
                               int64_t act, double neg) {
  check_cols(x, slopes, A, G, kB);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  if (x.numel() > 0) launch_gates_cols_fwd(x, y, slopes, A, G, act, neg);
  return y;
}

std::tuple<at::Tensor, at::Tensor> gates_cols_bwd_cuda(const at::Tensor& dy, const at::Tensor& x,
                                                       const at::Tensor& slopes, int64_t A, int64_t G,
                                                       int64_t act, double neg) {
  check_cols(x, slopes, A, G, kB);
  check_gated_grad(dy, x, kB);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dx = at::empty_like(x);
  if (x.numel() == 0) return {dx, at::zeros({G}, x.options().dtype(at::kFloat))};
  at::Tensor sums = launch_gates_cols_bwd(dy, x, dx, slopes, A, G, act, neg);
  return {dx, sums};
}

at::Tensor gates_rows_fwd_cuda(const at::Tensor& x, const at::Tensor& slopes, int64_t C, int64_t B,
                               int64_t act, double neg) {
  check_gated(x, slopes, C, B, kB);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  if (x.numel() > 0) launch_gates_rows_fwd(x, y, slopes, C, B, act, neg);
  return y;
}

std::tuple<at::Tensor, at::Tensor> gates_rows_bwd_cuda(const at::Tensor& dy, const at::Tensor& x,
                                                       const at::Tensor& slopes, int64_t C, int64_t B,
                                                       int64_t act, double neg) {
  check_gated(x, slopes, C, B, kB);
  check_gated_grad(dy, x, kB);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dx = at::empty_like(x);
  if (x.numel() == 0) return {dx, at::zeros({C}, x.options().dtype(at::kFloat))};
  at::Tensor sums = launch_gates_rows_bwd(dy, x, dx, slopes, C, B, act, neg);
  return {dx, sums};
}

// -- BatchNorm + gate -------------------------------------------------------------------------
void check_bn_x(const at::Tensor& x) {
  check_x(x, "x", kB);
  TORCH_CHECK(x.dim() >= 2, "bn_gate: x must have a batch and a channel dimension, got shape ", x.sizes());
}

void check_bn_params(const at::Tensor& x,
                     std::initializer_list<std::pair<const at::Tensor*, const char*>> ts) {
  check_bn_x(x);
  for (auto [t, name] : ts) check_channel_param(*t, name, x);
}

std::tuple<at::Tensor, at::Tensor> bn_stats_cuda(const at::Tensor& x) {
  check_bn_x(x);
  const int64_t count = x.size(1) ? x.numel() / x.size(1) : 0;
  TORCH_CHECK(count > 0, "bn_stats: x has no values per channel, got shape ", x.sizes());
  const c10::cuda::CUDAGuard guard(x.device());
  return launch_bn_stats(x);
}

// y = G(z) (r null) or G(z + r)
at::Tensor fwd(const at::Tensor& x, const at::Tensor* r, const at::Tensor& mean, const at::Tensor& invstd,
               const at::Tensor& w, const at::Tensor& b, const at::Tensor& slopes, int64_t act, double neg) {
  check_bn_params(x,
                  {{&mean, "mean"}, {&invstd, "invstd"}, {&w, "weight"}, {&b, "bias"}, {&slopes, "slopes"}});
  if (r) check_bn_residual(*r, x, kB);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  if (x.numel() > 0) launch_bn_gate_fwd(x, y, mean, invstd, w, b, slopes, act, neg, r);
  return y;
}

at::Tensor bwd_reduce(const at::Tensor& dy, const at::Tensor& x, const at::Tensor* r, const at::Tensor& mean,
                      const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                      const at::Tensor& slopes, int64_t act, double neg) {
  check_bn_params(x,
                  {{&mean, "mean"}, {&invstd, "invstd"}, {&w, "weight"}, {&b, "bias"}, {&slopes, "slopes"}});
  check_bn_grad(dy, x, kB);
  if (r) check_bn_residual(*r, x, kB);
  const c10::cuda::CUDAGuard guard(x.device());
  if (x.numel() == 0) return at::zeros({3, x.size(1)}, x.options().dtype(at::kDouble));
  return launch_bn_gate_bwd_reduce(dy, x, mean, invstd, w, b, slopes, act, neg, r);
}

// (dx, dr): dr undefined without r
std::tuple<at::Tensor, at::Tensor> bwd_apply(const at::Tensor& dy, const at::Tensor& x, const at::Tensor* r,
                                             const at::Tensor& mean, const at::Tensor& invstd,
                                             const at::Tensor& w, const at::Tensor& b,
                                             const at::Tensor& slopes, const at::Tensor& ca,
                                             const at::Tensor& cb, int64_t act, double neg) {
  check_bn_params(x, {{&mean, "mean"},
                      {&invstd, "invstd"},
                      {&w, "weight"},
                      {&b, "bias"},
                      {&slopes, "slopes"},
                      {&ca, "ca"},
                      {&cb, "cb"}});
  check_bn_grad(dy, x, kB);
  if (r) check_bn_residual(*r, x, kB);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dx = at::empty_like(x), dr;
  if (r) dr = at::empty_like(x);
  if (x.numel() > 0)
    launch_bn_gate_bwd_apply(dy, x, dx, mean, invstd, w, b, slopes, ca, cb, act, neg, r, r ? &dr : nullptr);
  return {dx, dr};
}

at::Tensor bn_gate_fwd_cuda(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& invstd,
                            const at::Tensor& w, const at::Tensor& b, const at::Tensor& slopes, int64_t act,
                            double neg) {
  return fwd(x, nullptr, mean, invstd, w, b, slopes, act, neg);
}

at::Tensor bn_gate_bwd_reduce_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                   const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                                   const at::Tensor& slopes, int64_t act, double neg) {
  return bwd_reduce(dy, x, nullptr, mean, invstd, w, b, slopes, act, neg);
}

at::Tensor bn_gate_bwd_apply_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                  const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                                  const at::Tensor& slopes, const at::Tensor& ca, const at::Tensor& cb,
                                  int64_t act, double neg) {
  return std::get<0>(bwd_apply(dy, x, nullptr, mean, invstd, w, b, slopes, ca, cb, act, neg));
}

at::Tensor bn_add_gate_fwd_cuda(const at::Tensor& x, const at::Tensor& r, const at::Tensor& mean,
                                const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                                const at::Tensor& slopes, int64_t act, double neg) {
  return fwd(x, &r, mean, invstd, w, b, slopes, act, neg);
}

at::Tensor bn_add_gate_bwd_reduce_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& r,
                                       const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& w,
                                       const at::Tensor& b, const at::Tensor& slopes, int64_t act,
                                       double neg) {
  return bwd_reduce(dy, x, &r, mean, invstd, w, b, slopes, act, neg);
}

std::tuple<at::Tensor, at::Tensor> bn_add_gate_bwd_apply_cuda(const at::Tensor& dy, const at::Tensor& x,
                                                              const at::Tensor& r, const at::Tensor& mean,
                                                              const at::Tensor& invstd, const at::Tensor& w,
                                                              const at::Tensor& b, const at::Tensor& slopes,
                                                              const at::Tensor& ca, const at::Tensor& cb,
                                                              int64_t act, double neg) {
  return bwd_apply(dy, x, &r, mean, invstd, w, b, slopes, ca, cb, act, neg);
}

// The whole op, one call per direction (common/bn_gate_host.h). The alpha terms are
// ops/core/alpha.py's alpha_terms, op for op, on gamma's device.
struct CudaPasses {
  static std::tuple<at::Tensor, at::Tensor> stats(const at::Tensor& x) { return bn_stats_cuda(x); }
  static std::tuple<at::Tensor, at::Tensor> terms(const at::Tensor& gamma, const at::Tensor& nu) {
    at::Tensor g = gamma.to(at::kDouble);
    if (g.numel() == 1) g = g.reshape({});
    const at::Tensor n = nu.to(at::kDouble).reshape({}), s = at::sigmoid(g), z = (s - 0.5) * n;
    const at::Tensor a = at::sigmoid(z), om = at::sigmoid(-z);
    return {om.to(at::kFloat), a * om * n * s * at::sigmoid(-g)};
  }
  static at::Tensor fwd(const at::Tensor& x, const at::Tensor& r, const at::Tensor& mean,
                        const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                        const at::Tensor& slopes, int64_t act, double neg) {
    return alphakern::fwd(x, r.defined() ? &r : nullptr, mean, invstd, w, b, slopes, act, neg);
  }
  static at::Tensor reduce(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& r,
                           const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& w,
                           const at::Tensor& b, const at::Tensor& slopes, int64_t act, double neg) {
    return bwd_reduce(dy, x, r.defined() ? &r : nullptr, mean, invstd, w, b, slopes, act, neg);
  }
  static std::tuple<at::Tensor, at::Tensor> apply(const at::Tensor& dy, const at::Tensor& x,
                                                  const at::Tensor& r, const at::Tensor& mean,
                                                  const at::Tensor& invstd, const at::Tensor& w,
                                                  const at::Tensor& b, const at::Tensor& slopes,
                                                  const at::Tensor& ca, const at::Tensor& cb, int64_t act,
                                                  double neg) {
    return bwd_apply(dy, x, r.defined() ? &r : nullptr, mean, invstd, w, b, slopes, ca, cb, act, neg);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(alphakern_C, CUDA, m) {
  m.impl("bn_gate", &bn_host::forward<CudaPasses>);
  m.impl("bn_gate_backward", &bn_host::backward<CudaPasses>);
  m.impl("bn_stats", &bn_stats_cuda);
  m.impl("bn_gate_fwd", &bn_gate_fwd_cuda);
  m.impl("bn_gate_bwd_reduce", &bn_gate_bwd_reduce_cuda);
  m.impl("bn_gate_bwd_apply", &bn_gate_bwd_apply_cuda);
  m.impl("bn_add_gate_fwd", &bn_add_gate_fwd_cuda);
  m.impl("bn_add_gate_bwd_reduce", &bn_add_gate_bwd_reduce_cuda);
  m.impl("bn_add_gate_bwd_apply", &bn_add_gate_bwd_apply_cuda);
  m.impl("alpha_relu_fwd", &alpha_relu_fwd_cuda);
  m.impl("alpha_relu_bwd", &alpha_relu_bwd_cuda);
  m.impl("gates_cols_fwd", &gates_cols_fwd_cuda);
  m.impl("gates_cols_bwd", &gates_cols_bwd_cuda);
  m.impl("gates_rows_fwd", &gates_rows_fwd_cuda);
  m.impl("gates_rows_bwd", &gates_rows_bwd_cuda);
}

}  // namespace alphakern
