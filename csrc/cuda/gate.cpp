// The CUDA kernels of alphakern's gate ops (alphakern_C::layer_gate_fwd, gates_*; schemas and fake
// kernels in alphakern/ops/backends/native/schema.py): checks, device guard, output allocation,
// then the launchers of layer_kernels.cu / gate_kernels.cu (BatchNorm + gate: bn_gate.cu). These are
// backend kernels; autograd lives on the Python op alphakern::alpha_relu, which calls them for
// backend="cuda".

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/checks.h"

#include <initializer_list>
#include <tuple>
#include <utility>

namespace alphakern {

// act, neg: f's code (common/act_codes.h) and leaky_relu's slope, checked by the launchers.
void launch_layer_gate_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& gamma, const at::Tensor& nu,
                           int64_t act, double neg);
void launch_layer_gate_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx, at::Tensor& dgamma,
                           const at::Tensor& gamma, const at::Tensor& nu, int64_t act, double neg);
void launch_gates_cols_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& slopes, int64_t A, int64_t G,
                           int64_t act, double neg);
at::Tensor launch_gates_cols_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                                 const at::Tensor& slopes, int64_t A, int64_t G, int64_t act, double neg);
void launch_gates_rows_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& slopes, int64_t C, int64_t B,
                           int64_t act, double neg);
at::Tensor launch_gates_rows_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                                 const at::Tensor& slopes, int64_t C, int64_t B, int64_t act, double neg);

namespace {

constexpr const Backend& kB = kCudaBackend;

bool fp32_or_fp64(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
}

// The kernels read 1-element fp32 or fp64 tensors; other dtypes (rare) are converted once.
at::Tensor kernel_scalar(const at::Tensor& t) { return (fp32_or_fp64(t) ? t : t.to(at::kFloat)).reshape({}); }

at::Tensor layer_gate_fwd_cuda(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& nu,
                               int64_t act, double neg) {
  check_x(x, "x", kB);
  check_scalar(gamma, "gamma", x.device());
  check_scalar(nu, "nu", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);  // x's memory format; the fake kernel says the same
  const at::Tensor xd = like(x, y);
  launch_layer_gate_fwd(xd, y, kernel_scalar(gamma), kernel_scalar(nu), act, neg);
  return y;
}

std::tuple<at::Tensor, at::Tensor> layer_gate_bwd_cuda(const at::Tensor& dy, const at::Tensor& x,
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
  launch_layer_gate_bwd(dyd, xd, dx, dgamma, kernel_scalar(gamma), kernel_scalar(nu), act, neg);
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

}  // namespace

TORCH_LIBRARY_IMPL(alphakern_C, CUDA, m) {
  m.impl("layer_gate_fwd", &layer_gate_fwd_cuda);
  m.impl("layer_gate_bwd", &layer_gate_bwd_cuda);
  m.impl("gates_cols_fwd", &gates_cols_fwd_cuda);
  m.impl("gates_cols_bwd", &gates_cols_bwd_cuda);
  m.impl("gates_rows_fwd", &gates_rows_fwd_cuda);
  m.impl("gates_rows_bwd", &gates_rows_bwd_cuda);
}

}  // namespace alphakern
