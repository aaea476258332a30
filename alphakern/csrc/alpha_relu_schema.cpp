// The schemas of alphakern's native ops (one library, a kernel per dispatch key) and their Meta
// kernels, so torch.compile can trace them. Built into the CPU library, which is always built; the
// CUDA library registers the CUDA kernels of the same ops (alpha_relu_ops.cpp).
//
//   alpha_relu_fwd(x, gamma, nu) -> y                      one gate: gamma, nu 1-element tensors
//   alpha_relu_bwd(dy, x, gamma, nu) -> (dx, dgamma)
//   gates_cols_fwd(x, slopes, A, G) -> y                   x flat [A, G], gate = column, slopes [G]
//   gates_cols_bwd(dy, x, slopes, A, G) -> (dx, sums)      sums[g] = sum of dy * relu(-x) in column g
//   gates_rows_fwd(x, slopes, C, B) -> y                   x flat [A, C, B], gate = c, slopes [C]
//   gates_rows_bwd(dy, x, slopes, C, B) -> (dx, sums)
//
// slopes are 1 - alpha per gate in fp32 (computed in fp64 by alphakern/ops/utils.alpha_terms); the
// sums are fp32 on CUDA and fp64 on the CPU; the chain rule to dgamma is applied by the caller.
//   gate_terms(gamma, nu) -> (slopes, dadg)   (CPU) per gate, in fp64: 1 - alpha rounded to fp32,
//                                             and d alpha / d gamma; what ops/utils.alpha_terms
//                                             gives, without its ~6 fp64 tensor passes

#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>

namespace alphakern {

std::string cpu_capability_name();  // cpu/alpha_relu_cpu.cpp: the SIMD level it was compiled for

namespace {

at::Tensor fwd_meta(const at::Tensor& x, const at::Tensor&, const at::Tensor&) {
  return at::empty_like(x);
}

std::tuple<at::Tensor, at::Tensor> bwd_meta(const at::Tensor&, const at::Tensor& x,
                                            const at::Tensor& gamma, const at::Tensor&) {
  return {at::empty_like(x), at::empty_like(gamma)};
}

}  // namespace

TORCH_LIBRARY(alphakern_C, m) {
  m.def("alpha_relu_fwd(Tensor x, Tensor gamma, Tensor nu) -> Tensor");
  m.def("alpha_relu_bwd(Tensor dy, Tensor x, Tensor gamma, Tensor nu) -> (Tensor, Tensor)");
  m.def("gates_cols_fwd(Tensor x, Tensor slopes, int A, int G) -> Tensor");
  m.def("gates_cols_bwd(Tensor dy, Tensor x, Tensor slopes, int A, int G) -> (Tensor, Tensor)");
  m.def("gates_rows_fwd(Tensor x, Tensor slopes, int C, int B) -> Tensor");
  m.def("gates_rows_bwd(Tensor dy, Tensor x, Tensor slopes, int C, int B) -> (Tensor, Tensor)");
  m.def("gate_terms(Tensor gamma, Tensor nu) -> (Tensor, Tensor)");
  m.def("cpu_capability() -> str", &cpu_capability_name);
}

TORCH_LIBRARY_IMPL(alphakern_C, Meta, m) {
  m.impl("alpha_relu_fwd", &fwd_meta);
  m.impl("alpha_relu_bwd", &bwd_meta);
}

}  // namespace alphakern
