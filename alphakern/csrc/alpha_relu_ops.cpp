// Argument checks and the CUDA kernels of alphakern's native ops (alphakern_C::alpha_relu_fwd, ...;
// schemas and Meta kernels in alpha_relu_schema.cpp, built into the CPU library, which
// alphakern/ops/cuda_ext.py loads first). These are backend kernels; autograd lives on the Python
// op alphakern::alpha_relu, which calls them for backend="cuda".

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

namespace alphakern {

void launch_alpha_relu_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& gamma,
                           const at::Tensor& nu);
void launch_alpha_relu_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                           at::Tensor& dgamma, const at::Tensor& gamma, const at::Tensor& nu);
void launch_gates_cols_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& slopes, int64_t A,
                           int64_t G);
at::Tensor launch_gates_cols_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                                 const at::Tensor& slopes, int64_t A, int64_t G);
void launch_gates_rows_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& slopes, int64_t C,
                           int64_t B);
at::Tensor launch_gates_rows_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                                 const at::Tensor& slopes, int64_t C, int64_t B);

namespace {

void check_scalar(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.numel() == 1, "alpha_relu: ", name, " must be a 1-element tensor, got shape ",
              t.sizes());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "alpha_relu: ", name,
              " must be a floating tensor, got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), "alpha_relu: ", name, " must be on x's device ",
              x.device(), ", got ", t.device());
}

void check_x(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.is_cuda(), "alpha_relu (cuda backend): ", name,
              " must be a CUDA tensor, got device ", x.device());
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16,
              "alpha_relu (cuda backend): ", name,
              " must be float32, float16 or bfloat16, got ", t);
}

// `t` laid out exactly like the dense tensor `ref` (copied only when the strides differ).
at::Tensor like(const at::Tensor& t, const at::Tensor& ref) {
  if (t.strides() == ref.strides() && t.is_non_overlapping_and_dense()) return t;
  return at::empty_like(ref, t.options()).copy_(t);
}

bool fp32_or_fp64(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
}

// The kernels read 1-element fp32 or fp64 tensors; other dtypes (rare) are converted once.
at::Tensor kernel_scalar(const at::Tensor& t) {
  return (fp32_or_fp64(t) ? t : t.to(at::kFloat)).reshape({});
}

at::Tensor alpha_relu_fwd_cuda(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& nu) {
  check_x(x, "x");
  check_scalar(gamma, "gamma", x);
  check_scalar(nu, "nu", x);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);  // x's memory format; the fake kernel says the same
  const at::Tensor xd = like(x, y);
  launch_alpha_relu_fwd(xd, y, kernel_scalar(gamma), kernel_scalar(nu));
  return y;
}

std::tuple<at::Tensor, at::Tensor> alpha_relu_bwd_cuda(const at::Tensor& dy, const at::Tensor& x,
                                                       const at::Tensor& gamma,
                                                       const at::Tensor& nu) {
  check_x(x, "x");
  check_x(dy, "dy");
  TORCH_CHECK(dy.sizes() == x.sizes(), "alpha_relu: dy must have x's shape ", x.sizes(),
              ", got ", dy.sizes());
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "alpha_relu: dy must have x's dtype ",
              x.scalar_type(), ", got ", dy.scalar_type());
  check_scalar(gamma, "gamma", x);
  check_scalar(nu, "nu", x);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dx = at::empty_like(x);
  const at::Tensor xd = like(x, dx);
  const at::Tensor dyd = like(dy, dx);
  // written in gamma's dtype directly when the kernel can (fp32, fp64): no conversion kernel
  at::Tensor dgamma = at::empty({}, x.options().dtype(fp32_or_fp64(gamma) ? gamma.scalar_type() : at::kFloat));
  launch_alpha_relu_bwd(dyd, xd, dx, dgamma, kernel_scalar(gamma), kernel_scalar(nu));
  return {dx, dgamma.to(gamma.scalar_type()).reshape(gamma.sizes())};
}

// Gates per channel/element: x (and dy) flat and contiguous in memory order, seen as [A, G]
// ("cols") or [A*C, B] ("rows") by the caller (alphakern/ops/gate_layout.py); slopes: fp32 1 - alpha
// per gate. Backward returns dx and the fp32 sums of dy*relu(-x) per gate.
void check_gated(const at::Tensor& x, const at::Tensor& slopes, int64_t gates, int64_t per_gate) {
  check_x(x, "x");
  TORCH_CHECK(x.dim() == 1 && x.is_contiguous(), "alpha_relu gates: x must be flat and contiguous");
  TORCH_CHECK(gates > 0 && per_gate > 0 && x.numel() % (gates * per_gate) == 0,
              "alpha_relu gates: ", x.numel(), " elements do not split into ", gates, " gates x ",
              per_gate);
  TORCH_CHECK(slopes.scalar_type() == at::kFloat && slopes.is_contiguous() && slopes.numel() == gates &&
                  slopes.device() == x.device(),
              "alpha_relu gates: slopes must be ", gates, " contiguous fp32 values on ", x.device());
}

void check_gated_grad(const at::Tensor& dy, const at::Tensor& x) {
  check_x(dy, "dy");
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type() && dy.is_contiguous(),
              "alpha_relu gates: dy must match x");
}

at::Tensor gates_cols_fwd_cuda(const at::Tensor& x, const at::Tensor& slopes, int64_t A, int64_t G) {
  check_gated(x, slopes, G, 1);
  TORCH_CHECK(A * G == x.numel(), "alpha_relu gates: A*G must be x's size");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  if (x.numel() > 0) launch_gates_cols_fwd(x, y, slopes, A, G);
  return y;
}

std::tuple<at::Tensor, at::Tensor> gates_cols_bwd_cuda(const at::Tensor& dy, const at::Tensor& x,
                                                       const at::Tensor& slopes, int64_t A, int64_t G) {
  check_gated(x, slopes, G, 1);
  check_gated_grad(dy, x);
  TORCH_CHECK(A * G == x.numel(), "alpha_relu gates: A*G must be x's size");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dx = at::empty_like(x);
  if (x.numel() == 0) return {dx, at::zeros({G}, x.options().dtype(at::kFloat))};
  at::Tensor sums = launch_gates_cols_bwd(dy, x, dx, slopes, A, G);
  return {dx, sums};
}

at::Tensor gates_rows_fwd_cuda(const at::Tensor& x, const at::Tensor& slopes, int64_t C, int64_t B) {
  check_gated(x, slopes, C, B);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  if (x.numel() > 0) launch_gates_rows_fwd(x, y, slopes, C, B);
  return y;
}

std::tuple<at::Tensor, at::Tensor> gates_rows_bwd_cuda(const at::Tensor& dy, const at::Tensor& x,
                                                       const at::Tensor& slopes, int64_t C, int64_t B) {
  check_gated(x, slopes, C, B);
  check_gated_grad(dy, x);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dx = at::empty_like(x);
  if (x.numel() == 0) return {dx, at::zeros({C}, x.options().dtype(at::kFloat))};
  at::Tensor sums = launch_gates_rows_bwd(dy, x, dx, slopes, C, B);
  return {dx, sums};
}

}  // namespace

TORCH_LIBRARY_IMPL(alphakern_C, CUDA, m) {
  m.impl("alpha_relu_fwd", &alpha_relu_fwd_cuda);
  m.impl("alpha_relu_bwd", &alpha_relu_bwd_cuda);
  m.impl("gates_cols_fwd", &gates_cols_fwd_cuda);
  m.impl("gates_cols_bwd", &gates_cols_bwd_cuda);
  m.impl("gates_rows_fwd", &gates_rows_fwd_cuda);
  m.impl("gates_rows_bwd", &gates_rows_bwd_cuda);
}

}  // namespace alphakern
