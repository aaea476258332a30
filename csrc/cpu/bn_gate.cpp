// CPU kernels of BatchNorm fused with the gate: z = (x - mean) * invstd * weight + bias, then
// y = z + alpha (f(z) - z) per gate (one per layer, or one per BN channel). Schemas and fake kernels:
// alphakern/ops/backends/native/schema.py; the op and its autograd: alphakern/ops/bn_gate.py.
//
//   bn_stats(x) -> (mean, var)                  per channel, fp32 results of fp64 sums of d, d^2,
//                                               d = x - k (k: common/bn_shift.h)
//   bn_gate_fwd(x, mean, invstd, w, b, slopes) -> y
//   bn_gate_bwd_reduce(dy, x, ...) -> [3, C]     sums of dz, dz * xhat, dy * (f(z) - z) per channel
//   bn_gate_bwd_apply(dy, x, ..., ca, cb) -> dx  dx = w invstd (dz - ca - xhat cb)
//
// dz = dL/dz is the gate's backward of dy at z, recomputed from x (z is never stored): training
// makes two passes forward (statistics; normalise-and-gate) and two backward (one reduction over x
// and dy that also sums the gate's term, one apply pass), where eager BN then gate makes five. With
// a residual in fp32, bn_gate_backward's reduction also writes dr = dz and its apply pass reads it
// (kReduceDz, kApplyDz); the pass ops below keep recomputing dz.
// x is [N, C, S...] contiguous ("rows": N*C rows of S) or channels_last ("cols": N*S rows of C);
// per-channel parameters are fp32 [C] (slopes: 1 - alpha, repeated per channel for a layer gate).
// Determinism: work items with shape-only bounds, each summing in a fixed order into its own fp64
// partial; partials added in index order -- bitwise the same for any thread count.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../common/alpha_terms.h"
#include "../common/bn_gate_host.h"
#include "../common/checks.h"
#include "vec_io.h"

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

namespace alphakern {

namespace {

constexpr const Backend& kB = kCpuBackend;
constexpr int64_t kRowsChunk = 16384;  // "cols": elements of rows per work item
constexpr int64_t kFlush = 256;        // fp32 sums move into fp64 at least this often (elements)

// The per-channel parameters of the kN fp32 vectors of one step: broadcast (rows: one channel) or
// loaded at channel c (cols: a run of channels).
struct Params {
  const float *mean, *invstd, *w, *b, *slope, *ca, *cb;
};

struct Lane {
  fVec m, is, w, b, s, ca, cb;
};

inline Lane lane_of(const Params& p, int64_t c) {
  return {fVec(p.mean[c]),
          fVec(p.invstd[c]),
          fVec(p.w[c]),
          fVec(p.b[c]),
          fVec(p.slope[c]),
          fVec(p.ca ? p.ca[c] : 0.f),
          fVec(p.cb ? p.cb[c] : 0.f)};
}

inline fVec ld(const float* p, int64_t c, int64_t n) {
  return n < fVec::size() ? fVec::loadu(p + c, n) : fVec::loadu(p + c);
}

inline Lane lane_at(const Params& p, int64_t c, int64_t n) {
  const fVec zero(0.f);
  return {ld(p.mean, c, n),
          ld(p.invstd, c, n),
          ld(p.w, c, n),
          ld(p.b, c, n),
          ld(p.slope, c, n),
          p.ca ? ld(p.ca, c, n) : zero,
          p.cb ? ld(p.cb, c, n) : zero};
}

// Layout of x: "rows" (contiguous: N*C rows of S, row r is channel r % C) or "cols" (channels_last:
// R = N*S rows of C).
struct Shape {
  bool cols;
  int64_t C, S, R;
};

Shape shape_of(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 2, "bn_gate: x must have a batch and a channel dimension, got shape ", x.sizes());
  const int64_t C = x.size(1), S = C ? x.numel() / std::max<int64_t>(1, x.size(0) * C) : 0;
  if (x.is_contiguous()) return {false, C, S, x.size(0) * C};
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "bn_gate: x must be contiguous or channels_last, got strides ", x.strides());
  return {true, C, S, x.size(0) * S};
}

// One step of the element math on kN vectors v (x) and g (dy), per mode:
//   kFwd: v <- y;   kReduce: out[0..2] += dz, dz * xhat, dy * h(z);   kApply: g <- dx;
//   kReduceDz: kReduce that also leaves dz in g (the caller stores it);
//   kApplyDz: kApply from dz (not dy) in g, so no gate math and no residual.
// The *Dz pair serves BN -> add -> gate in fp32: the sums pass writes dr (= dz) and the apply pass
// reads it instead of dy and r, one tensor pass fewer than kReduce + kApply with the same fp32 dz.
enum Mode { kFwd, kReduce, kApply, kReduceDz, kApplyDz };
template <Mode M>
constexpr bool kSums = M == kReduce || M == kReduceDz;

// RES: s = z + r (the residual in r) is gated instead of z, and kApply also leaves dr = ds in r.
// BLEND (kFwd): some gate is saturated, so the forward keeps act_math.h's exact-blend form.
template <Mode M, int N, int ACT, bool RES = false, bool BLEND = true>
inline void step(fVec* v, fVec* g, fVec* r, const Lane* L, const fVec& ns, fVec* out) {
  fVec z[N], s[N], xh[N];
  for (int k = 0; k < N; ++k) {
    xh[k] = (v[k] - L[k].m) * L[k].is;
    z[k] = xh[k] * L[k].w + L[k].b;
    if constexpr (RES) z[k] = z[k] + r[k];
    s[k] = L[k].s;
  }
  if constexpr (M == kFwd) {
    fwd_math<N, ACT, BLEND>(z, s, ns);
    for (int k = 0; k < N; ++k) v[k] = z[k];
  } else if constexpr (M == kApplyDz) {
    for (int k = 0; k < N; ++k) g[k] = L[k].w * L[k].is * (g[k] - L[k].ca - xh[k] * L[k].cb);
  } else {
    fVec c[N];
    bwd_math<N, ACT>(g, z, s, c, ns);  // g <- dz
    for (int k = 0; k < N; ++k) {
      if constexpr (kSums<M>) {
        out[0] = out[0] + g[k];
        out[1] = out[1] + g[k] * xh[k];
        out[2] = out[2] + c[k];
      } else {
        if constexpr (RES) r[k] = g[k];
        g[k] = L[k].w * L[k].is * (g[k] - L[k].ca - xh[k] * L[k].cb);
      }
    }
  }
}

inline double lanes_sum(const fVec& v) {
  float l[fVec::size()];
  v.store(l);
  double s = 0.0;
  for (float f : l) s += f;
  return s;
}

// The tensors of one pass: x, dy (kReduce, kApply), the residual r and its gradient dr (RES,
// kApply), out (kFwd: y, kApply: dx); every one laid out as x.
template <typename T>
struct Ptrs {
  const T *x, *dy, *r;
  T *out, *dr;
  Ptrs at(int64_t off) const {
    auto o = [off](auto* p) { return p ? p + off : p; };
    return {x + off, o(dy), o(r), o(out), o(dr)};
  }
};

// "rows": one row of n elements of one channel; kReduce adds its three sums into tot.
template <Mode M, typename T, int ACT, bool RES, bool BLEND>
void row(const Ptrs<T>& q, int64_t n, const Lane& L1, float neg, double* tot) {
  using io = Io<T>;
  constexpr int N = io::kN;
  Lane L[N];
  for (int k = 0; k < N; ++k) L[k] = L1;
  const fVec ns(neg);
  fVec v[N], g[N], r[N], acc[3] = {fVec(0.f), fVec(0.f), fVec(0.f)};
  int64_t i = 0, since = 0;
  for (; i < n; i += io::kStep) {
    // 0: a full step; in a tail, lanes past the row hold dy = 0, so they add dz = 0 and dy * h = 0
    const int64_t t = n - i < io::kStep ? n - i : 0;
    t ? io::load(q.x + i, v, t) : io::load(q.x + i, v);
    if constexpr (M != kFwd) t ? io::load(q.dy + i, g, t) : io::load(q.dy + i, g);
    if constexpr (RES) t ? io::load(q.r + i, r, t) : io::load(q.r + i, r);
    step<M, N, ACT, RES, BLEND>(v, g, r, L, ns, acc);
    if constexpr (M == kFwd) t ? io::store(q.out + i, v, t) : io::store(q.out + i, v);
    if constexpr (M == kApply || M == kApplyDz) t ? io::store(q.out + i, g, t) : io::store(q.out + i, g);
    if constexpr (M == kApply && RES) t ? io::store(q.dr + i, r, t) : io::store(q.dr + i, r);
    if constexpr (M == kReduceDz) t ? io::store(q.dr + i, g, t) : io::store(q.dr + i, g);
    if constexpr (kSums<M>) {
      if ((since += io::kStep) >= kFlush) {
        for (int j = 0; j < 3; ++j) tot[j] += lanes_sum(acc[j]), acc[j] = fVec(0.f);
        since = 0;
      }
    }
  }
  if constexpr (kSums<M>) {
    for (int j = 0; j < 3; ++j) tot[j] += lanes_sum(acc[j]);
  }
}

// "cols": rows [r0, r1) of C channels; kReduce adds per-channel sums into tot[3][C] (fp32 runs of
// at most kFlush rows, then fp64).
template <Mode M, typename T, int ACT, bool RES, bool BLEND>
void col_rows(const Ptrs<T>& q, int64_t r0, int64_t r1, int64_t C, const Params& p, float neg, double* tot,
              float* acc) {
  using io = Io<T>;
  constexpr int N = io::kN;
  const fVec ns(neg);
  if constexpr (kSums<M>) std::fill(acc, acc + 3 * C, 0.f);
  int64_t since = 0;
  for (int64_t row = r0; row < r1; ++row) {
    const Ptrs<T> at_row = q.at(row * C);
    const T *x = at_row.x, *dy = at_row.dy, *res = at_row.r;
    T *out = at_row.out, *dr = at_row.dr;
    for (int64_t c = 0; c < C; c += io::kStep) {
      const int64_t t = C - c < io::kStep ? C - c : 0;
      fVec v[N], g[N], r[N], sums[3];
      Lane L[N];
      for (int k = 0; k < N; ++k) {
        const int64_t cnt = t ? part(t, k) : fVec::size();
        L[k] = lane_at(p, c + k * fVec::size(), cnt);
      }
      t ? io::load(x + c, v, t) : io::load(x + c, v);
      if constexpr (M != kFwd) t ? io::load(dy + c, g, t) : io::load(dy + c, g);
      if constexpr (RES) t ? io::load(res + c, r, t) : io::load(res + c, r);
      if constexpr (kSums<M>) {
        // per vector k its own channels: sum per k, not across k
        for (int k = 0; k < N; ++k) {
          fVec vk[1] = {v[k]}, gk[1] = {g[k]}, rk[1] = {r[k]};
          for (int j = 0; j < 3; ++j) sums[j] = fVec(0.f);
          step<M, 1, ACT, RES>(vk, gk, rk, &L[k], ns, sums);
          g[k] = gk[0];  // dz, for kReduceDz
          const int64_t cnt = t ? part(t, k) : fVec::size(), at = c + k * fVec::size();
          for (int j = 0; j < 3; ++j) {
            float* a = acc + j * C + at;
            if (cnt == 0) continue;
            const fVec nv = ld(a, 0, cnt) + sums[j];
            cnt < fVec::size() ? nv.store(a, cnt) : nv.store(a);
          }
        }
        if constexpr (M == kReduceDz) t ? io::store(dr + c, g, t) : io::store(dr + c, g);
      } else {
        step<M, N, ACT, RES, BLEND>(v, g, r, L, ns, sums);
        if constexpr (M == kFwd) t ? io::store(out + c, v, t) : io::store(out + c, v);
        if constexpr (M == kApply || M == kApplyDz) t ? io::store(out + c, g, t) : io::store(out + c, g);
        if constexpr (M == kApply && RES) t ? io::store(dr + c, r, t) : io::store(dr + c, r);
      }
    }
    if constexpr (kSums<M>) {
      if (++since >= kFlush || row + 1 == r1) {
        for (int64_t j = 0; j < 3 * C; ++j) tot[j] += acc[j], acc[j] = 0.f;
        since = 0;
      }
    }
  }
}

// Runs mode M over x; kReduce returns the [3, C] fp64 sums (dz, dz * xhat, dy * h per channel).
template <Mode M, typename T, int ACT, bool RES, bool BLEND>
std::vector<double> run(const Shape& sh, const Ptrs<T>& q, const Params& p, float neg) {
  const int64_t C = sh.C;
  std::vector<double> sums(kSums<M> ? 3 * C : 0, 0.0);
  if (!sh.cols) {
    if constexpr (kSums<M>) {  // one item per channel: its rows in batch order
      const int64_t n_batch = sh.R / std::max<int64_t>(C, 1);
      run_items(C, sh.R * sh.S, [&](int64_t lo, int64_t hi) {
        for (int64_t c = lo; c < hi; ++c) {
          double tot[3] = {0.0, 0.0, 0.0};
          const Lane L = lane_of(p, c);
          for (int64_t n = 0; n < n_batch; ++n) {
            row<M, T, ACT, RES, BLEND>(q.at((n * C + c) * sh.S), sh.S, L, neg, tot);
          }
          for (int j = 0; j < 3; ++j) sums[j * C + c] = tot[j];
        }
      });
    } else {
      run_items(sh.R, sh.R * sh.S, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          row<M, T, ACT, RES, BLEND>(q.at(r * sh.S), sh.S, lane_of(p, r % C), neg, nullptr);
        }
      });
    }
    return sums;
  }
  const int64_t rows = std::max<int64_t>(1, kRowsChunk / std::max<int64_t>(C, 1));
  const int64_t chunks = divup(sh.R, rows);
  std::vector<double> partial(kSums<M> ? chunks * 3 * C : 0, 0.0);
  run_items(chunks, sh.R * C, [&](int64_t lo, int64_t hi) {
    std::vector<float> acc(kSums<M> ? 3 * C : 0);
    for (int64_t k = lo; k < hi; ++k) {
      col_rows<M, T, ACT, RES, BLEND>(q, k * rows, std::min(sh.R, (k + 1) * rows), C, p, neg,
                                      kSums<M> ? partial.data() + k * 3 * C : nullptr, acc.data());
    }
  });
  for (int64_t k = 0; k < (kSums<M> ? chunks : 0); ++k) {
    for (int64_t j = 0; j < 3 * C; ++j) sums[j] += partial[k * 3 * C + j];
  }
  return sums;
}

// -- statistics: fp64 sums of d = x - k and d^2 per channel, over fp32 runs of at most kFlush
// elements; the shift k (common/bn_shift.h) keeps var = E[d^2] - E[d]^2 free of cancellation.

template <typename T>
void stats_row(const T* x, int64_t n, float shift, double* tot) {
  using io = Io<T>;
  fVec v[io::kN], s(0.f), q(0.f);
  const fVec k0(shift), zero(0.f);
  int64_t since = 0;
  for (int64_t i = 0; i < n; i += io::kStep) {
    const int64_t t = n - i < io::kStep ? n - i : 0;
    t ? io::load(x + i, v, t) : io::load(x + i, v);
    for (int k = 0; k < io::kN; ++k) {
      const fVec d = t ? fVec::set(zero, v[k] - k0, part(t, k)) : v[k] - k0;  // lanes past the row: 0
      s = s + d, q = q + d * d;
    }
    if ((since += io::kStep) >= kFlush) {
      tot[0] += lanes_sum(s), tot[1] += lanes_sum(q), s = q = fVec(0.f);
      since = 0;
    }
  }
  tot[0] += lanes_sum(s), tot[1] += lanes_sum(q);
}

template <typename T>
std::vector<double> stats(const Shape& sh, const T* x, const float* shift) {
  const int64_t C = sh.C;
  std::vector<double> sums(2 * C, 0.0);
  if (!sh.cols) {
    const int64_t n_batch = sh.R / std::max<int64_t>(C, 1);
    run_items(C, sh.R * sh.S, [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c) {
        double tot[2] = {0.0, 0.0};
        for (int64_t n = 0; n < n_batch; ++n) stats_row<T>(x + (n * C + c) * sh.S, sh.S, shift[c], tot);
        sums[c] = tot[0], sums[C + c] = tot[1];
      }
    });
    return sums;
  }
  const int64_t rows = std::max<int64_t>(1, kRowsChunk / std::max<int64_t>(C, 1));
  const int64_t chunks = divup(sh.R, rows);
  std::vector<double> partial(chunks * 2 * C, 0.0);
  run_items(chunks, sh.R * C, [&](int64_t lo, int64_t hi) {
    std::vector<float> acc(2 * C);
    for (int64_t k = lo; k < hi; ++k) {
      double* tot = partial.data() + k * 2 * C;
      const int64_t r1 = std::min(sh.R, (k + 1) * rows);
      std::fill(acc.begin(), acc.end(), 0.f);
      int64_t since = 0;
      for (int64_t r = k * rows; r < r1; ++r) {
        const T* xr = x + r * C;
        for (int64_t c = 0; c < C; c += Io<T>::kStep) {
          const int64_t t = C - c < Io<T>::kStep ? C - c : 0;
          fVec v[Io<T>::kN];
          t ? Io<T>::load(xr + c, v, t) : Io<T>::load(xr + c, v);
          for (int k = 0; k < Io<T>::kN; ++k) {
            const int64_t cnt = t ? part(t, k) : fVec::size(), at = c + k * fVec::size();
            if (cnt == 0) continue;
            float *s = acc.data() + at, *q = acc.data() + C + at;
            const fVec d = v[k] - ld(shift, at, cnt);
            const fVec ns = ld(s, 0, cnt) + d, nq = ld(q, 0, cnt) + d * d;
            cnt < fVec::size() ? ns.store(s, cnt) : ns.store(s);
            cnt < fVec::size() ? nq.store(q, cnt) : nq.store(q);
          }
        }
        if (++since >= kFlush || r + 1 == r1) {
          for (int64_t j = 0; j < 2 * C; ++j) tot[j] += acc[j], acc[j] = 0.f;
          since = 0;
        }
      }
    }
  });
  for (int64_t k = 0; k < chunks; ++k) {
    for (int64_t j = 0; j < 2 * C; ++j) sums[j] += partial[k * 2 * C + j];
  }
  return sums;
}

// -- host side: checks, dispatch ---------------------------------------------------------------

Params params_of(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& w,
                 const at::Tensor& b, const at::Tensor& slopes) {
  check_x(x, "x", kB);
  for (auto [t, name] :
       {std::pair{&mean, "mean"}, {&invstd, "invstd"}, {&w, "weight"}, {&b, "bias"}, {&slopes, "slopes"}}) {
    check_channel_param(*t, name, x);
  }
  return {mean.const_data_ptr<float>(),
          invstd.const_data_ptr<float>(),
          w.const_data_ptr<float>(),
          b.const_data_ptr<float>(),
          slopes.const_data_ptr<float>(),
          nullptr,
          nullptr};
}

// bn_shift (common/bn_shift.h: the mean of x's corner, 8 samples by 4 positions per spatial
// dimension) as one fp64 loop, where its eight small tensor ops cost as much as the statistics of
// a ResNet-20 activation at batch 64.
template <typename T>
std::vector<float> corner_means(const at::Tensor& x) {
  const int64_t C = x.size(1), nb = std::min<int64_t>(x.size(0), 8), dims = x.dim() - 2;
  std::vector<int64_t> ext(dims), idx(dims, 0);
  int64_t per = nb;
  for (int64_t d = 0; d < dims; ++d) per *= (ext[d] = std::min<int64_t>(x.size(d + 2), 4));
  std::vector<double> acc(C, 0.0);
  const T* p = x.const_data_ptr<T>();
  const int64_t sn = x.stride(0), sc = x.stride(1);
  for (int64_t n = 0; n < nb && per > 0; ++n) {
    std::fill(idx.begin(), idx.end(), 0);
    while (true) {
      int64_t off = n * sn;
      for (int64_t d = 0; d < dims; ++d) off += idx[d] * x.stride(d + 2);
      for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(static_cast<float>(p[off + c * sc]));
      int64_t d = dims - 1;  // the next position, last dimension fastest
      for (; d >= 0 && ++idx[d] == ext[d]; --d) idx[d] = 0;
      if (d < 0) break;
    }
  }
  std::vector<float> k(C);
  for (int64_t c = 0; c < C; ++c) k[c] = static_cast<float>(acc[c] / static_cast<double>(per));
  return k;
}

std::tuple<at::Tensor, at::Tensor> bn_stats_cpu(const at::Tensor& x) {
  check_x(x, "x", kB);
  const Shape sh = shape_of(x);
  const int64_t count = sh.C ? x.numel() / sh.C : 0;
  TORCH_CHECK(count > 0, "bn_stats: x has no values per channel, got shape ", x.sizes());
  std::vector<double> sums;
  std::vector<float> k;
  dispatch(x.scalar_type(), 0, [&](auto tag, auto) {
    using T = decltype(tag);
    k = corner_means<T>(x);
    sums = stats<T>(sh, x.const_data_ptr<T>(), k.data());
  });
  const float* shift = k.data();
  at::Tensor mean = at::empty({sh.C}, x.options().dtype(at::kFloat));
  at::Tensor var = at::empty({sh.C}, x.options().dtype(at::kFloat));
  for (int64_t c = 0; c < sh.C; ++c) {
    const double m = sums[c] / count;  // E[x - k]
    mean.mutable_data_ptr<float>()[c] = static_cast<float>(shift[c] + m);
    var.mutable_data_ptr<float>()[c] = static_cast<float>(std::max(0.0, sums[sh.C + c] / count - m * m));
  }
  return {mean, var};
}

// Runs mode M over x (dy, r, out, dr may be undefined): with a residual r the gated value is z + r.
template <Mode M>
std::vector<double> launch(const at::Tensor& x, const at::Tensor& dy, const at::Tensor& r, at::Tensor& out,
                           at::Tensor& dr, const Params& p, int64_t act, double neg) {
  const Shape sh = shape_of(x);
  std::vector<double> sums(kSums<M> ? 3 * sh.C : 0, 0.0);
  if (x.numel() == 0) return sums;
  dispatch(x.scalar_type(), act, [&](auto tag, auto code) {
    using T = decltype(tag);
    auto cptr = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<T>() : nullptr; };
    auto mptr = [](at::Tensor& t) { return t.defined() ? t.mutable_data_ptr<T>() : nullptr; };
    const Ptrs<T> q{x.const_data_ptr<T>(), cptr(dy), cptr(r), mptr(out), mptr(dr)};
    constexpr int A = decltype(code)::value;
    const float ng = static_cast<float>(neg);
    if constexpr (M == kFwd && A != 0) {
      if (!saturated(p.slope, sh.C)) {  // no gate at alpha = 0 or 1: the blend-free forward, same bits
        sums =
            r.defined() ? run<M, T, A, true, false>(sh, q, p, ng) : run<M, T, A, false, false>(sh, q, p, ng);
        return;
      }
    }
    sums = r.defined() ? run<M, T, A, true, true>(sh, q, p, ng) : run<M, T, A, false, true>(sh, q, p, ng);
  });
  return sums;
}

at::Tensor fwd(const at::Tensor& x, const at::Tensor& r, const at::Tensor& mean, const at::Tensor& invstd,
               const at::Tensor& w, const at::Tensor& b, const at::Tensor& slopes, int64_t act, double neg) {
  const Params p = params_of(x, mean, invstd, w, b, slopes);
  if (r.defined()) check_bn_residual(r, x, kB);
  at::Tensor y = at::empty_like(x), none;
  launch<kFwd>(x, none, r, y, none, p, act, neg);
  return y;
}

at::Tensor bwd_reduce(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& r, const at::Tensor& mean,
                      const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                      const at::Tensor& slopes, int64_t act, double neg) {
  const Params p = params_of(x, mean, invstd, w, b, slopes);
  check_bn_grad(dy, x, kB);
  if (r.defined()) check_bn_residual(r, x, kB);
  at::Tensor none;
  const std::vector<double> sums = launch<kReduce>(x, dy, r, none, none, p, act, neg);
  return at::tensor(sums, x.options().dtype(at::kDouble)).reshape({3, x.size(1)});
}

std::tuple<at::Tensor, at::Tensor> bwd_apply(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& r,
                                             const at::Tensor& mean, const at::Tensor& invstd,
                                             const at::Tensor& w, const at::Tensor& b,
                                             const at::Tensor& slopes, const at::Tensor& ca,
                                             const at::Tensor& cb, int64_t act, double neg) {
  Params p = params_of(x, mean, invstd, w, b, slopes);
  check_bn_grad(dy, x, kB);
  check_channel_param(ca, "ca", x);
  check_channel_param(cb, "cb", x);
  p.ca = ca.const_data_ptr<float>();
  p.cb = cb.const_data_ptr<float>();
  at::Tensor dx = at::empty_like(x), dr;
  if (r.defined()) {
    check_bn_residual(r, x, kB);
    dr = at::empty_like(x);
  }
  launch<kApply>(x, dy, r, dx, dr, p, act, neg);
  return {dx, dr};
}

// -- the ops: bn_gate_* (y = G(z)) and bn_add_gate_* (y = G(z + r)) ---------------------------------

at::Tensor bn_gate_fwd_cpu(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& invstd,
                           const at::Tensor& w, const at::Tensor& b, const at::Tensor& slopes, int64_t act,
                           double neg) {
  return fwd(x, at::Tensor(), mean, invstd, w, b, slopes, act, neg);
}

at::Tensor bn_gate_bwd_reduce_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                  const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                                  const at::Tensor& slopes, int64_t act, double neg) {
  return bwd_reduce(dy, x, at::Tensor(), mean, invstd, w, b, slopes, act, neg);
}

at::Tensor bn_gate_bwd_apply_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                 const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                                 const at::Tensor& slopes, const at::Tensor& ca, const at::Tensor& cb,
                                 int64_t act, double neg) {
  return std::get<0>(bwd_apply(dy, x, at::Tensor(), mean, invstd, w, b, slopes, ca, cb, act, neg));
}

at::Tensor bn_add_gate_fwd_cpu(const at::Tensor& x, const at::Tensor& r, const at::Tensor& mean,
                               const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                               const at::Tensor& slopes, int64_t act, double neg) {
  return fwd(x, r, mean, invstd, w, b, slopes, act, neg);
}

at::Tensor bn_add_gate_bwd_reduce_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& r,
                                      const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& w,
                                      const at::Tensor& b, const at::Tensor& slopes, int64_t act,
                                      double neg) {
  return bwd_reduce(dy, x, r, mean, invstd, w, b, slopes, act, neg);
}

std::tuple<at::Tensor, at::Tensor> bn_add_gate_bwd_apply_cpu(const at::Tensor& dy, const at::Tensor& x,
                                                             const at::Tensor& r, const at::Tensor& mean,
                                                             const at::Tensor& invstd, const at::Tensor& w,
                                                             const at::Tensor& b, const at::Tensor& slopes,
                                                             const at::Tensor& ca, const at::Tensor& cb,
                                                             int64_t act, double neg) {
  return bwd_apply(dy, x, r, mean, invstd, w, b, slopes, ca, cb, act, neg);
}

// -- the whole op, one call per direction ---------------------------------------------------------
// What common/bn_gate_host.h composes from tensor ops for CUDA, here on host arrays: the per-channel
// parameters, alpha terms, statistics, centring and parameter gradients are a few hundred scalars,
// and as ~30 ATen ops they cost more than the kernels on ResNet-20's 8x8 activations.

// A per-channel input as fp32 values: t itself when fp32 and contiguous, else a converted copy; an
// absent one (BN without affine) is `fill` C times.
struct Channels {
  at::Tensor held;
  std::vector<float> own;
  const float* p;
  Channels(const std::optional<at::Tensor>& t, int64_t C, float fill, const char* name) {
    if (!t) {
      own.assign(C, fill);
      p = own.data();
      return;
    }
    TORCH_CHECK(t->numel() == C && t->device().is_cpu() && at::isFloatingType(t->scalar_type()),
                "bn_gate: ", name, " must be a floating CPU tensor of ", C, " values (x's channels), got ",
                t->scalar_type(), " of shape ", t->sizes(), " on ", t->device());
    held = t->scalar_type() == at::kFloat && t->is_contiguous() ? *t : t->to(at::kFloat).contiguous();
    p = held.const_data_ptr<float>();
  }
};

// 1 - alpha per channel (a layer gate's repeated) and dalpha/dgamma per gate (common/alpha_terms.h).
struct Slopes {
  std::vector<float> om;
  std::vector<double> dadg;
  Slopes(const at::Tensor& gamma, const at::Tensor& nu, int64_t C) {
    TORCH_CHECK(gamma.device().is_cpu() && at::isFloatingType(gamma.scalar_type()) &&
                    (gamma.numel() == 1 || gamma.numel() == C),
                "bn_gate: gamma must be a floating CPU tensor of 1 or ", C, " values (x's channels), got ",
                gamma.scalar_type(), " of shape ", gamma.sizes(), " on ", gamma.device());
    check_scalar(nu, "nu", gamma.device());
    const at::Tensor g = gamma.contiguous();
    const double n = nu.item<double>();
    om.resize(C);
    dadg.resize(g.numel());
    // gamma's values read in place (a converted copy per call was an ATen op on every step)
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "bn_gate_gamma", [&] {
      const scalar_t* gp = g.const_data_ptr<scalar_t>();
      for (int64_t i = 0; i < g.numel(); ++i) {
        const Terms t = alpha_terms(static_cast<double>(gp[i]), n);
        dadg[i] = t.dadg;
        om[i] = t.om;
      }
    });
    if (g.numel() == 1) std::fill(om.begin(), om.end(), om[0]);
  }
};

at::Tensor channel_tensor(const at::Tensor& x, int64_t C) {
  return at::empty({C}, x.options().dtype(at::kFloat));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_gate_cpu(
    const at::Tensor& x, const std::optional<at::Tensor>& residual, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, const at::Tensor& gamma, const at::Tensor& nu,
    bool training, double eps, int64_t act, double neg) {
  check_x(x, "x", kB);
  const at::Tensor xd = bn_host::kernel_layout(x), r = bn_host::residual_of(residual, xd);
  if (r.defined()) check_bn_residual(r, xd, kB);
  const Shape sh = shape_of(xd);
  const int64_t C = sh.C;
  at::Tensor mean, var, invstd = channel_tensor(x, C);
  if (training) {
    std::tie(mean, var) = bn_stats_cpu(xd);
  } else {  // copies of the running statistics: an op's outputs never alias its inputs
    TORCH_CHECK(running_mean && running_var,
                "bn_gate: running_mean and running_var are needed outside training");
    const Channels rm(running_mean, C, 0.f, "running_mean"), rv(running_var, C, 1.f, "running_var");
    mean = channel_tensor(x, C), var = channel_tensor(x, C);
    std::copy_n(rm.p, C, mean.mutable_data_ptr<float>());
    std::copy_n(rv.p, C, var.mutable_data_ptr<float>());
  }
  const float *m = mean.const_data_ptr<float>(), *v = var.const_data_ptr<float>();
  float* is = invstd.mutable_data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) is[c] = 1.f / std::sqrt(v[c] + static_cast<float>(eps));  // torch.rsqrt's
  const Channels w(weight, C, 1.f, "weight"), b(bias, C, 0.f, "bias");
  const Slopes s(gamma, nu, C);
  const Params p{m, is, w.p, b.p, s.om.data(), nullptr, nullptr};
  at::Tensor y = at::empty_like(xd), none;
  launch<kFwd>(xd, none, r, y, none, p, act, neg);
  return {bn_host::as_x(y, x), mean, var, invstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_gate_backward_cpu(
    const at::Tensor& dy, const at::Tensor& x, const std::optional<at::Tensor>& residual,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, const at::Tensor& mean,
    const at::Tensor& invstd, const at::Tensor& gamma, const at::Tensor& nu, bool training, int64_t act,
    double neg) {
  check_x(x, "x", kB);
  const at::Tensor xd = bn_host::kernel_layout(x), r = bn_host::residual_of(residual, xd);
  const at::Tensor dyd = bn_host::laid_out(dy, xd, "dy");
  check_bn_grad(dyd, xd, kB);
  if (r.defined()) check_bn_residual(r, xd, kB);
  const Shape sh = shape_of(xd);
  const int64_t C = sh.C;
  check_channel_param(mean, "mean", xd);
  check_channel_param(invstd, "invstd", xd);
  const Channels w(weight, C, 1.f, "weight"), b(bias, C, 0.f, "bias");
  const Slopes s(gamma, nu, C);
  Params p{
      mean.const_data_ptr<float>(), invstd.const_data_ptr<float>(), w.p, b.p, s.om.data(), nullptr, nullptr};
  // With a residual in fp32 the sums pass also writes dr = dz, which the apply pass reads instead of dy
  // and r: one pass fewer, the same bits. fp16/bf16 would round dz before dx, so they recompute it.
  const bool via_dr = r.defined() && xd.scalar_type() == at::kFloat;
  at::Tensor none, dr = r.defined() ? at::empty_like(xd) : at::Tensor();
  const std::vector<double> sums = via_dr ? launch<kReduceDz>(xd, dyd, r, none, dr, p, act, neg)
                                          : launch<kReduce>(xd, dyd, r, none, none, p, act, neg);  // [3, C]
  // dx = w invstd (dz - ca - xhat cb): ca, cb the batch means of dz and dz xhat in training, 0 in eval
  std::vector<float> ca(C, 0.f), cb(C, 0.f);
  if (training) {
    const double count = static_cast<double>(std::max<int64_t>(x.numel() / std::max<int64_t>(C, 1), 1));
    for (int64_t c = 0; c < C; ++c)
      ca[c] = static_cast<float>(sums[c] / count), cb[c] = static_cast<float>(sums[C + c] / count);
  }
  p.ca = ca.data();
  p.cb = cb.data();
  at::Tensor dx = at::empty_like(xd);
  via_dr ? launch<kApplyDz>(xd, dr, none, dx, none, p, act, neg)
         : launch<kApply>(xd, dyd, r, dx, dr, p, act, neg);
  at::Tensor dw = channel_tensor(x, C), db = channel_tensor(x, C);
  float *dwp = dw.mutable_data_ptr<float>(), *dbp = db.mutable_data_ptr<float>();
  for (int64_t c = 0; c < C; ++c)
    dwp[c] = static_cast<float>(sums[C + c]), dbp[c] = static_cast<float>(sums[c]);
  // dgamma: the gate's sums times dalpha/dgamma in fp64, rounded once to gamma's dtype; a layer gate
  // sums its channels in index order
  std::vector<double> dg(gamma.numel());
  if (gamma.numel() == 1) {
    double tot = 0.0;
    for (int64_t c = 0; c < C; ++c) tot += sums[2 * C + c];
    dg[0] = tot * s.dadg[0];
  } else {
    for (int64_t c = 0; c < C; ++c) dg[c] = sums[2 * C + c] * s.dadg[c];
  }
  at::Tensor dgamma = at::empty(gamma.sizes(), gamma.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gamma.scalar_type(), "bn_gate_dgamma", [&] {
    scalar_t* out = dgamma.mutable_data_ptr<scalar_t>();
    for (size_t i = 0; i < dg.size(); ++i) out[i] = c10::convert<scalar_t>(dg[i]);
  });
  return {bn_host::as_x(dx, x), residual ? bn_host::as_x(dr, x) : x.new_empty({0}), dw, db, dgamma};
}

}  // namespace

TORCH_LIBRARY_IMPL(alphakern_C, CPU, m) {
  m.impl("bn_gate", &bn_gate_cpu);
  m.impl("bn_gate_backward", &bn_gate_backward_cpu);
  m.impl("bn_stats", &bn_stats_cpu);
  m.impl("bn_gate_fwd", &bn_gate_fwd_cpu);
  m.impl("bn_gate_bwd_reduce", &bn_gate_bwd_reduce_cpu);
  m.impl("bn_gate_bwd_apply", &bn_gate_bwd_apply_cpu);
  m.impl("bn_add_gate_fwd", &bn_add_gate_fwd_cpu);
  m.impl("bn_add_gate_bwd_reduce", &bn_add_gate_bwd_reduce_cpu);
  m.impl("bn_add_gate_bwd_apply", &bn_add_gate_bwd_apply_cpu);
}

}  // namespace alphakern
