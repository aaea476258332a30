// Argument checks of the native ops, one copy for the CPU and CUDA libraries (host code). The
// Python op checks its inputs first (alphakern/ops/core/checks.py); these guard the ops when they
// are called directly, with messages that name the argument and what was expected.
#pragma once

#include <ATen/ATen.h>

namespace alphakern {

// Where a library's tensors live, for its checks and messages.
struct Backend {
  c10::DeviceType device;
  const char* name;         // as in backend='...'
  const char* device_name;  // as in "a CPU tensor"
};

inline constexpr Backend kCpuBackend{c10::DeviceType::CPU, "cpu", "CPU"};
inline constexpr Backend kCudaBackend{c10::DeviceType::CUDA, "cuda", "CUDA"};

inline void check_x(const at::Tensor& x, const char* name, const Backend& b) {
  TORCH_CHECK(x.device().type() == b.device, "alpha_relu (", b.name, " backend): ", name, " must be a ",
              b.device_name, " tensor, got device ", x.device());
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16, "alpha_relu (", b.name,
              " backend): ", name, " must be float32, float16 or bfloat16, got ", t);
}

// gamma and nu of the one-gate ops: 1-element floating tensors on `device`.
inline void check_scalar(const at::Tensor& t, const char* name, const at::Device& device) {
  TORCH_CHECK(t.numel() == 1 && at::isFloatingType(t.scalar_type()), "alpha_relu: ", name,
              " must be a 1-element floating tensor, got ", t.scalar_type(), " of shape ", t.sizes());
  TORCH_CHECK(t.device() == device, "alpha_relu: ", name, " must be on x's device ", device, ", got ",
              t.device());
}

inline void check_grad(const at::Tensor& dy, const at::Tensor& x, const Backend& b) {
  check_x(dy, "dy", b);
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "alpha_relu: dy must have x's shape ", x.sizes(), " and dtype ", x.scalar_type(), ", got ",
              dy.sizes(), " ", dy.scalar_type());
}

// The gate ops: x flat and contiguous in memory order, `gates` x `per_gate` dividing its size,
// slopes (1 - alpha per gate) contiguous fp32 on x's device.
inline void check_gated(const at::Tensor& x, const at::Tensor& slopes, int64_t gates, int64_t per_gate,
                        const Backend& b) {
  check_x(x, "x", b);
  TORCH_CHECK(x.dim() == 1 && x.is_contiguous(), "alpha_relu gates: x must be flat and contiguous");
  TORCH_CHECK(gates > 0 && per_gate > 0 && x.numel() % (gates * per_gate) == 0,
              "alpha_relu gates: ", x.numel(), " elements do not split into ", gates, " gates x ", per_gate);
  TORCH_CHECK(slopes.scalar_type() == at::kFloat && slopes.is_contiguous() && slopes.numel() == gates &&
                  slopes.device() == x.device(),
              "alpha_relu gates: slopes must be ", gates, " contiguous fp32 values on ", x.device());
}

// "cols" ops: A rows of G columns are x.
inline void check_cols(const at::Tensor& x, const at::Tensor& slopes, int64_t A, int64_t G,
                       const Backend& b) {
  check_gated(x, slopes, G, 1, b);
  TORCH_CHECK(A * G == x.numel(), "alpha_relu gates: A*G must be x's size");
}

inline void check_gated_grad(const at::Tensor& dy, const at::Tensor& x, const Backend& b) {
  check_grad(dy, x, b);
  TORCH_CHECK(dy.is_contiguous(), "alpha_relu gates: dy must be contiguous");
}

// The fused BatchNorm + gate ops' per-channel tensors (mean, invstd, weight, bias, slopes, ...):
// fp32 [C], contiguous, on x's device.
inline void check_channel_param(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.dim() == 1 && t.numel() == x.size(1) && t.is_contiguous() &&
                  t.device() == x.device(),
              "bn_gate: ", name, " must be ", x.size(1), " contiguous fp32 values on ", x.device(), ", got ",
              t.scalar_type(), " of shape ", t.sizes());
}

// The fused BatchNorm + gate ops' dy: x's shape, dtype and strides (the kernels index both alike).
inline void check_bn_grad(const at::Tensor& dy, const at::Tensor& x, const Backend& b) {
  check_grad(dy, x, b);
  TORCH_CHECK(dy.strides() == x.strides(), "bn_gate: dy must have x's strides");
}

// The bn_add_gate ops' residual: x's shape, dtype and strides (the kernels index both alike).
inline void check_bn_residual(const at::Tensor& r, const at::Tensor& x, const Backend& b) {
  check_x(r, "residual", b);
  TORCH_CHECK(r.sizes() == x.sizes() && r.scalar_type() == x.scalar_type() && r.strides() == x.strides(),
              "bn_add_gate: residual must have x's shape ", x.sizes(), ", dtype ", x.scalar_type(),
              " and strides ", x.strides(), ", got ", r.sizes(), " ", r.scalar_type(), " strides ",
              r.strides());
}

// `t` laid out exactly like the dense tensor `ref` (copied only when the strides differ).
inline at::Tensor like(const at::Tensor& t, const at::Tensor& ref) {
  if (t.strides() == ref.strides() && t.is_non_overlapping_and_dense()) return t;
  return at::empty_like(ref, t.options()).copy_(t);
}

}  // namespace alphakern
