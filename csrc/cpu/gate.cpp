// CPU kernels of alphakern's native ops (schemas and fake kernels:
// alphakern/ops/backends/native/schema.py): the gate's forward and a backward that reads x and dy
// once, writing dx and the dgamma partials in the same pass.
//
// Element math in fp32 (at::vec::Vectorized, AVX2 when built with it; fp16/bf16 converted in
// registers). f = relu (ACT 0): PReLU semantics as the CUDA kernels (../elementwise.cuh):
// y = x > 0 ? x : x * (1 - a), slope 1 at x = +-0, NaN propagates into y and into its own gate's
// sum. Any other f (ACT = ops.core.activations.CODES, a template argument): act_math.h, the
// same forms as the Triton kernels.
//
// Determinism: the work is cut into items whose bounds depend on the shape only (pieces of a row,
// chunks of rows, blocks of columns). Each item sums in a fixed order and writes its own fp64
// partial; the partials are added in index order. Which thread runs an item never matters, so
// dgamma is bitwise the same for any number of threads.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "../common/act_codes.h"
#include "../common/alpha_terms.h"
#include "../common/checks.h"
#include "act_math.h"
#include "vec_io.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace alphakern {

std::string cpu_capability_name() {
#if defined(CPU_CAPABILITY_AVX512)
  return "AVX512";
#elif defined(CPU_CAPABILITY_AVX2)
  return "AVX2";
#else
  return "DEFAULT";
#endif
}

namespace {

constexpr int64_t kPiece = 16384;      // elements of a row per work item (one fp64 partial each)
constexpr int64_t kBlock = 256;        // fp32 sums restart every kBlock elements (accuracy)
constexpr int64_t kColsChunk = 65536;  // elements per row chunk in "cols" mode with few columns
constexpr int64_t kSpanMin = 256;      // few columns: rows are joined into spans of >= this
constexpr int64_t kManyCols = 2048;    // from here "cols" mode splits the columns, not the rows
constexpr int64_t kColBlock = 512;     // columns per work item then
constexpr int64_t kFlushRows = 64;     // ... whose fp32 column sums move into fp64 this often

// Slopes for the kN vectors at offset i: one per element (kPerElem) or one for the span.
template <int kN, bool kPerElem>
inline void slopes_at(const float* s, const fVec& om, int64_t i, int64_t tail, fVec* sv) {
  for (int k = 0; k < kN; ++k) {
    if constexpr (kPerElem) {
      sv[k] =
          tail ? fVec::loadu(s + i + k * fVec::size(), part(tail, k)) : fVec::loadu(s + i + k * fVec::size());
    } else {
      sv[k] = om;
    }
  }
}

template <typename T, bool kPerElem, int ACT, bool kBlend>
void fwd_span_as(const T* x, T* y, int64_t n, const float* slopes, float om, float neg) {
  using io = Io<T>;
  constexpr int N = io::kN;
  const fVec omv(om), ns(neg);
  fVec v[N], s[N];
  int64_t i = 0;
  for (; i + io::kStep <= n; i += io::kStep) {
    io::load(x + i, v);
    slopes_at<N, kPerElem>(slopes, omv, i, 0, s);
    fwd_math<N, ACT, kBlend>(v, s, ns);
    io::store(y + i, v);
  }
  if (i < n) {
    const int64_t t = n - i;
    io::load(x + i, v, t);
    slopes_at<N, kPerElem>(slopes, omv, i, t, s);
    fwd_math<N, ACT, kBlend>(v, s, ns);
    io::store(y + i, v, t);
  }
}

// The forward over a span; ``blend``: some gate of it is saturated (act_math.h, gate_y).
template <typename T, bool kPerElem, int ACT>
void fwd_span(const T* x, T* y, int64_t n, const float* slopes, float om, float neg, bool blend) {
  if (blend) {
    fwd_span_as<T, kPerElem, ACT, true>(x, y, n, slopes, om, neg);
  } else {
    fwd_span_as<T, kPerElem, ACT, false>(x, y, n, slopes, om, neg);
  }
}

// Backward over a span with one slope: writes dx, returns sum(dy * relu(-x)) in fp64, summed in
// fp32 blocks of kBlock elements (fixed order).
template <typename T, int ACT>
double bwd_span_scalar(const T* dy, const T* x, T* dx, int64_t n, float om, float neg) {
  using io = Io<T>;
  constexpr int N = io::kN;
  const fVec omv(om), ns(neg);
  fVec total(0.f), g[N], xv[N], s[N], c[N];
  for (int k = 0; k < N; ++k) s[k] = omv;
  int64_t i = 0;
  while (i + io::kStep <= n) {
    fVec blk(0.f);
    const int64_t end = std::min(n, i + kBlock);
    for (; i + io::kStep <= end; i += io::kStep) {
      io::load(dy + i, g);
      io::load(x + i, xv);
      bwd_math<N, ACT>(g, xv, s, c, ns);
      for (int k = 0; k < N; ++k) blk = blk + c[k];
      io::store(dx + i, g);
    }
    total = total + blk;
  }
  if (i < n) {
    const int64_t t = n - i;
    io::load(dy + i, g, t);
    io::load(x + i, xv, t);  // zero-filled lanes add 0 * h(0) = 0
    bwd_math<N, ACT>(g, xv, s, c, ns);
    for (int k = 0; k < N; ++k) total = total + c[k];
    io::store(dx + i, g, t);
  }
  float lanes[fVec::size()];
  total.store(lanes);
  double sum = 0.0;
  for (float l : lanes) sum += l;
  return sum;
}

// Backward over a span with one slope per element: writes dx, adds dy * h(x) into acc[0, n).
template <typename T, int ACT>
void bwd_span_cols(const T* dy, const T* x, T* dx, int64_t n, const float* slopes, float* acc, float neg) {
  using io = Io<T>;
  constexpr int N = io::kN;
  const fVec unused(0.f), ns(neg);
  fVec g[N], xv[N], s[N], c[N];
  for (int64_t i = 0; i < n; i += io::kStep) {
    const int64_t t = n - i < io::kStep ? n - i : 0;  // 0: a full step
    if (t) {
      io::load(dy + i, g, t);
      io::load(x + i, xv, t);
    } else {
      io::load(dy + i, g);
      io::load(x + i, xv);
    }
    slopes_at<N, true>(slopes, unused, i, t, s);
    bwd_math<N, ACT>(g, xv, s, c, ns);
    for (int k = 0; k < N; ++k) {
      float* a = acc + i + k * fVec::size();
      if (t) {
        const int64_t m = part(t, k);
        if (m) (fVec::loadu(a, m) + c[k]).store(a, m);
      } else {
        (fVec::loadu(a) + c[k]).store(a);
      }
    }
    t ? io::store(dx + i, g, t) : io::store(dx + i, g);
  }
}

// "rows": x = [R rows of B], row r has gate r % C. Layer gates are R = C = 1, B = numel.
template <typename T, int ACT>
void rows_fwd(const T* x, T* y, const float* slopes, int64_t R, int64_t C, int64_t B, float neg) {
  const int64_t P = divup(B, kPiece);
  run_items(R * P, R * B, [&](int64_t lo, int64_t hi) {
    for (int64_t it = lo; it < hi; ++it) {
      const int64_t r = it / P, start = (it % P) * kPiece, off = r * B + start;
      const float om = slopes[r % C];
      fwd_span<T, false, ACT>(x + off, y + off, std::min(kPiece, B - start), nullptr, om, neg,
                              saturated(&om, 1));
    }
  });
}

template <typename T, int ACT>
std::vector<double> rows_bwd(const T* dy, const T* x, T* dx, const float* slopes, int64_t R, int64_t C,
                             int64_t B, float neg) {
  const int64_t P = divup(B, kPiece);
  std::vector<double> partial(R * P);
  run_items(R * P, R * B, [&](int64_t lo, int64_t hi) {
    for (int64_t it = lo; it < hi; ++it) {
      const int64_t r = it / P, start = (it % P) * kPiece, off = r * B + start;
      partial[it] = bwd_span_scalar<T, ACT>(dy + off, x + off, dx + off, std::min(kPiece, B - start),
                                            slopes[r % C], neg);
    }
  });
  std::vector<double> sums(C, 0.0);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t p = 0; p < P; ++p) sums[r % C] += partial[r * P + p];
  }
  return sums;
}

// "cols": x = [A rows of G], the gate is the column. Few columns: rows joined into spans of k rows
// (the slopes repeated k times) and chunks of rows per work item. Many: blocks of columns.
struct ColsPlan {
  int64_t k, rows_per_chunk, chunks;
};

ColsPlan cols_plan(int64_t A, int64_t G) {
  const int64_t k = std::max<int64_t>(1, kSpanMin / G);
  const int64_t rows = divup(divup(kColsChunk, G), k) * k;
  return {k, rows, divup(A, rows)};
}

std::vector<float> repeated(const float* slopes, int64_t G, int64_t k) {
  std::vector<float> s(G * k);
  for (int64_t j = 0; j < k; ++j) std::copy(slopes, slopes + G, s.begin() + j * G);
  return s;
}

// The forward has no sums, so many columns go in memory order too: pieces of up to kPiece columns
// of one row, rows one after another (the backward's column blocks, a row apart, made it 1.3x
// slower at G = 3072).
template <typename T, int ACT>
void cols_fwd(const T* x, T* y, const float* slopes, int64_t A, int64_t G, float neg) {
  const bool blend = saturated(slopes, G);
  if (G >= kManyCols) {
    const int64_t P = divup(G, kPiece);
    run_items(A * P, A * G, [&](int64_t lo, int64_t hi) {
      for (int64_t it = lo; it < hi; ++it) {
        const int64_t g0 = (it % P) * kPiece, off = (it / P) * G + g0;
        fwd_span<T, true, ACT>(x + off, y + off, std::min(kPiece, G - g0), slopes + g0, 0.f, neg, blend);
      }
    });
    return;
  }
  const ColsPlan p = cols_plan(A, G);
  const std::vector<float> s = repeated(slopes, G, p.k);
  run_items(p.chunks, A * G, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      const int64_t a1 = std::min(A, (c + 1) * p.rows_per_chunk);
      for (int64_t a = c * p.rows_per_chunk; a < a1; a += p.k) {
        const int64_t n = std::min(p.k, a1 - a) * G;
        fwd_span<T, true, ACT>(x + a * G, y + a * G, n, s.data(), 0.f, neg, blend);
      }
    }
  });
}

template <typename T, int ACT>
std::vector<double> cols_bwd(const T* dy, const T* x, T* dx, const float* slopes, int64_t A, int64_t G,
                             float neg) {
  std::vector<double> sums(G, 0.0);
  if (G >= kManyCols) {
    run_items(divup(G, kColBlock), A * G, [&](int64_t lo, int64_t hi) {
      std::vector<float> acc(kColBlock);
      for (int64_t b = lo; b < hi; ++b) {
        const int64_t g0 = b * kColBlock, w = std::min(kColBlock, G - g0);
        for (int64_t a0 = 0; a0 < A; a0 += kFlushRows) {
          std::fill(acc.begin(), acc.end(), 0.f);
          for (int64_t a = a0; a < std::min(A, a0 + kFlushRows); ++a) {
            const int64_t off = a * G + g0;
            bwd_span_cols<T, ACT>(dy + off, x + off, dx + off, w, slopes + g0, acc.data(), neg);
          }
          for (int64_t j = 0; j < w; ++j) sums[g0 + j] += acc[j];
        }
      }
    });
    return sums;
  }
  const ColsPlan p = cols_plan(A, G);
  const std::vector<float> s = repeated(slopes, G, p.k);
  std::vector<double> partial(p.chunks * G);
  run_items(p.chunks, A * G, [&](int64_t lo, int64_t hi) {
    std::vector<float> acc(G * p.k);
    for (int64_t c = lo; c < hi; ++c) {
      std::fill(acc.begin(), acc.end(), 0.f);
      const int64_t a1 = std::min(A, (c + 1) * p.rows_per_chunk);
      for (int64_t a = c * p.rows_per_chunk; a < a1; a += p.k) {
        const int64_t n = std::min(p.k, a1 - a) * G;
        bwd_span_cols<T, ACT>(dy + a * G, x + a * G, dx + a * G, n, s.data(), acc.data(), neg);
      }
      for (int64_t j = 0; j < p.k; ++j) {
        for (int64_t g = 0; g < G; ++g) partial[c * G + g] += acc[j * G + g];
      }
    }
  });
  for (int64_t c = 0; c < p.chunks; ++c) {
    for (int64_t g = 0; g < G; ++g) sums[g] += partial[c * G + g];
  }
  return sums;
}

// -- host side: checks, dtype dispatch, registration ------------------------------------------

constexpr const Backend& kB = kCpuBackend;

// gamma, nu: 1-element tensors (checked), read once on the host.
Terms terms(const at::Tensor& gamma, const at::Tensor& nu) {
  return alpha_terms(gamma.item<double>(), nu.item<double>());
}

at::Tensor layer_gate_fwd_cpu(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& nu, int64_t act,
                              double neg) {
  check_x(x, "x", kB);
  check_scalar(gamma, "gamma", x.device());
  check_scalar(nu, "nu", x.device());
  at::Tensor y = at::empty_like(x);  // x's memory format, as the fake kernel says
  const at::Tensor xd = like(x, y);
  const float om = terms(gamma, nu).om;
  dispatch(x.scalar_type(), act, [&](auto tag, auto code) {
    using scalar_t = decltype(tag);
    rows_fwd<scalar_t, decltype(code)::value>(xd.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                              &om, 1, 1, x.numel(), static_cast<float>(neg));
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> layer_gate_bwd_cpu(const at::Tensor& dy, const at::Tensor& x,
                                                      const at::Tensor& gamma, const at::Tensor& nu,
                                                      int64_t act, double neg) {
  check_x(x, "x", kB);
  check_grad(dy, x, kB);
  check_scalar(gamma, "gamma", x.device());
  check_scalar(nu, "nu", x.device());
  at::Tensor dx = at::empty_like(x);
  const at::Tensor xd = like(x, dx), dyd = like(dy, dx);
  const Terms tm = terms(gamma, nu);
  double sum = 0.0;
  dispatch(x.scalar_type(), act, [&](auto tag, auto code) {
    using scalar_t = decltype(tag);
    sum = rows_bwd<scalar_t, decltype(code)::value>(
        dyd.const_data_ptr<scalar_t>(), xd.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(),
        &tm.om, 1, 1, x.numel(), static_cast<float>(neg))[0];
  });
  const at::Tensor dgamma = at::scalar_tensor(sum * tm.dadg, gamma.options().dtype(at::kDouble));
  return {dx, dgamma.to(gamma.scalar_type()).reshape(gamma.sizes())};
}

at::Tensor sums_tensor(const std::vector<double>& sums, const at::Tensor& x) {
  return at::tensor(sums, x.options().dtype(at::kDouble));
}

at::Tensor gates_cols_fwd_cpu(const at::Tensor& x, const at::Tensor& slopes, int64_t A, int64_t G,
                              int64_t act, double neg) {
  check_cols(x, slopes, A, G, kB);
  at::Tensor y = at::empty_like(x);
  dispatch(x.scalar_type(), act, [&](auto tag, auto code) {
    using scalar_t = decltype(tag);
    cols_fwd<scalar_t, decltype(code)::value>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                              slopes.const_data_ptr<float>(), A, G, static_cast<float>(neg));
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> gates_cols_bwd_cpu(const at::Tensor& dy, const at::Tensor& x,
                                                      const at::Tensor& slopes, int64_t A, int64_t G,
                                                      int64_t act, double neg) {
  check_cols(x, slopes, A, G, kB);
  check_gated_grad(dy, x, kB);
  at::Tensor dx = at::empty_like(x);
  std::vector<double> sums;
  dispatch(x.scalar_type(), act, [&](auto tag, auto code) {
    using scalar_t = decltype(tag);
    sums = cols_bwd<scalar_t, decltype(code)::value>(
        dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(),
        slopes.const_data_ptr<float>(), A, G, static_cast<float>(neg));
  });
  return {dx, sums_tensor(sums, x)};
}

at::Tensor gates_rows_fwd_cpu(const at::Tensor& x, const at::Tensor& slopes, int64_t C, int64_t B,
                              int64_t act, double neg) {
  check_gated(x, slopes, C, B, kB);
  at::Tensor y = at::empty_like(x);
  dispatch(x.scalar_type(), act, [&](auto tag, auto code) {
    using scalar_t = decltype(tag);
    rows_fwd<scalar_t, decltype(code)::value>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                              slopes.const_data_ptr<float>(), x.numel() / B, C, B,
                                              static_cast<float>(neg));
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> gates_rows_bwd_cpu(const at::Tensor& dy, const at::Tensor& x,
                                                      const at::Tensor& slopes, int64_t C, int64_t B,
                                                      int64_t act, double neg) {
  check_gated(x, slopes, C, B, kB);
  check_gated_grad(dy, x, kB);
  at::Tensor dx = at::empty_like(x);
  std::vector<double> sums;
  dispatch(x.scalar_type(), act, [&](auto tag, auto code) {
    using scalar_t = decltype(tag);
    sums = rows_bwd<scalar_t, decltype(code)::value>(
        dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(),
        slopes.const_data_ptr<float>(), x.numel() / B, C, B, static_cast<float>(neg));
  });
  return {dx, sums_tensor(sums, x)};
}

// (sigmoid(v), sigmoid(-v)) from one exp: e = exp(-|v|) in (0, 1], p = 1 / (1 + e) = sigmoid(|v|),
// q = e p = sigmoid(-|v|) -- both with full relative precision (q is not 1 - p), NaN kept.
inline std::pair<at::vec::Vectorized<double>, at::vec::Vectorized<double>> sigmoid_pair(
    const at::vec::Vectorized<double>& v) {
  using dVec = at::vec::Vectorized<double>;
  const dVec one(1.0), e = v.abs().neg().exp(), p = one / (one + e), q = e * p;
  const dVec pos = v >= dVec(0.0);  // all-ones lanes where v >= 0 (false for NaN)
  return {dVec::blendv(q, p, pos), dVec::blendv(p, q, pos)};
}

// alpha_terms (common/alpha_terms.h) for the gates [lo, hi) in fp64 vectors: the same quantities,
// two SLEEF exps (<= 1 ulp) a gate instead of four libm ones. A per-element gate holds one gate per
// element of a sample (65,536 at 64x32x32), where the scalar terms cost as much as the gate kernel.
void alpha_terms_span(const double* g, double n, float* om_out, double* dadg_out, int64_t lo, int64_t hi) {
  using dVec = at::vec::Vectorized<double>;
  constexpr int64_t W = dVec::size();
  const dVec half(0.5), nv(n);
  double om[W];
  for (int64_t i = lo; i < hi; i += W) {
    const int64_t k = std::min<int64_t>(W, hi - i);
    const auto [s, sneg] = sigmoid_pair(dVec::loadu(g + i, k));
    const auto [a, omv] = sigmoid_pair((s - half) * nv);  // 1 - alpha = sigmoid(-z): no cancellation
    (a * omv * nv * s * sneg).store(dadg_out + i, k);
    omv.store(om, k);
    for (int64_t j = 0; j < k; ++j) om_out[i + j] = static_cast<float>(om[j]);
  }
}

// Per gate: 1 - alpha (fp32) and d alpha / d gamma (fp64), from gamma of any floating dtype.
std::tuple<at::Tensor, at::Tensor> gate_terms_cpu(const at::Tensor& gamma, const at::Tensor& nu) {
  TORCH_CHECK(gamma.device().is_cpu() && at::isFloatingType(gamma.scalar_type()),
              "gate_terms: gamma must be a floating CPU tensor, got ", gamma.scalar_type(), " on ",
              gamma.device());
  check_scalar(nu, "nu", gamma.device());
  const at::Tensor g = gamma.to(at::kDouble).contiguous();
  const double n = nu.item<double>();
  at::Tensor om = at::empty(gamma.sizes(), gamma.options().dtype(at::kFloat));
  at::Tensor dadg = at::empty(gamma.sizes(), gamma.options().dtype(at::kDouble));
  const double* gp = g.const_data_ptr<double>();
  float* op = om.mutable_data_ptr<float>();
  double* dp = dadg.mutable_data_ptr<double>();
  at::parallel_for(0, g.numel(), 4096,
                   [&](int64_t lo, int64_t hi) { alpha_terms_span(gp, n, op, dp, lo, hi); });
  return {om, dadg};
}

}  // namespace

// No tensor argument to dispatch on: the catch-all (CompositeImplicitAutograd) kernel.
TORCH_LIBRARY_IMPL(alphakern_C, CompositeImplicitAutograd, m) {
  m.impl("cpu_capability", &cpu_capability_name);
}

TORCH_LIBRARY_IMPL(alphakern_C, CPU, m) {
  m.impl("gate_terms", &gate_terms_cpu);
  m.impl("layer_gate_fwd", &layer_gate_fwd_cpu);
  m.impl("layer_gate_bwd", &layer_gate_bwd_cpu);
  m.impl("gates_cols_fwd", &gates_cols_fwd_cpu);
  m.impl("gates_cols_bwd", &gates_cols_bwd_cpu);
  m.impl("gates_rows_fwd", &gates_rows_fwd_cpu);
  m.impl("gates_rows_bwd", &gates_rows_bwd_cpu);
}

}  // namespace alphakern
