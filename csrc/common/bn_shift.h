// The per-channel shift k of the BatchNorm statistics (CPU and CUDA kernels, as
// alphakern/ops/core/batchnorm.py's shift for Triton): the statistics sum d = x - k and d^2, and
// var = E[d^2] - E[d]^2 keeps its digits when |mean| >> std, where E[x^2] - E[x]^2 over fp32
// partial sums loses them all. k is the mean of a corner of x (the first 8 samples, the first 4
// positions of each spatial dimension), so |k - mean| is of the order of std: E[d^2] stays near
// var, never inflated by a mean or an outlier.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

namespace alphakern {

inline at::Tensor bn_shift(const at::Tensor& x) {
  at::Tensor corner = x.narrow(0, 0, std::min<int64_t>(x.size(0), 8));
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) {
    corner = corner.narrow(d, 0, std::min<int64_t>(x.size(d), 4));
    dims.push_back(d);
  }
  return corner.to(at::kDouble).mean(dims).to(at::kFloat).contiguous();
}

}  // namespace alphakern
