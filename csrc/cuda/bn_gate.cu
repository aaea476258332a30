// CUDA kernels of BatchNorm fused with the gate (the op: alphakern/ops/bn_gate.py; the contract of
// alphakern_C::bn_stats / bn_gate_fwd / bn_gate_bwd_reduce / bn_gate_bwd_apply and their bn_add_gate_*
// forms with a residual r, as the CPU kernels in csrc/cpu/bn_gate.cpp). z = (x - mean) * invstd * w + b
// (+ r: RES) is recomputed from x in every pass, never stored; the apply pass of RES also writes
// dr = dz. The element math is the gate kernels' (elementwise.cuh).
//
// x is seen as
//   "rows" [N*C, S] (contiguous NCHW): a warp per (row, segment of at most kSeg elements), one
//          channel per row; a reduction's partial is the segment's warp sum;
//   "cols" [M, C] (channels_last, M = N*S): threads own VEC channels and walk rows, as the "cols" gate
//          kernels; a reduction's partial is a block's rows, added in row order in the block.
// Partials are fp32, one per (unit, sum, channel), in a buffer whose shape depends on the tensor's
// shape alone (never the GPU); the host adds them in fp64 (at::sum over a dimension: fixed order, no
// atomics), so every result is bitwise reproducible. int64 indices; 16-byte accesses when every
// pointer is aligned and the inner dimension divides into vectors.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/bn_gate_host.h"
#include "../common/bn_shift.h"
#include "../common/checks.h"
#include "../common/cuda_utils.cuh"
#include "elementwise.cuh"

#include <algorithm>
#include <cstdint>

namespace alphakern {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kSeg = 4096;           // "rows": elements per warp unit (bounds each fp32 sum)
constexpr int64_t kMaxRowBlocks = 1024;  // "cols": row blocks (fixed: the partition is the shape's)

enum Mode { kStats = 0, kFwd = 1, kReduce = 2, kApply = 3 };
template <int MODE>
constexpr int kSums = MODE == kStats ? 2 : (MODE == kReduce ? 3 : 0);

struct Params {
  const float* mean;
  const float* invstd;
  const float* w;
  const float* b;
  const float* om;  // 1 - alpha per channel
  const float* ca;  // apply: mean(dz), mean(dz * xhat) per channel (zero in eval)
  const float* cb;
};

struct Channel {
  float mean, invstd, w, b, om, ca, cb;
};

template <int MODE>
__device__ __forceinline__ Channel channel(const Params& p, int64_t c) {
  Channel ch{0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  if constexpr (MODE == kStats) {
    ch.mean = p.mean[c];  // the shift k: the statistics sum d = x - k and d^2
  } else {
    ch = {p.mean[c], p.invstd[c], p.w[c], p.b[c], p.om[c], 0.0f, 0.0f};
    if constexpr (MODE == kApply) {
      ch.ca = p.ca[c];
      ch.cb = p.cb[c];
    }
  }
  return ch;
}

// One element: its output (fwd: y, apply: dx) or its terms added into acc (stats: x, x^2; reduce:
// dz, dz * xhat, dy * (f(z) - z)). RES: z + r is gated, and apply leaves dz in dr.
template <int MODE, int ACT, bool RES>
__device__ __forceinline__ float element(float x, float dy, float r, float& dr, const Channel& ch, float neg,
                                         float* acc) {
  if constexpr (MODE == kStats) {
    const float d = x - ch.mean;
    acc[0] += d;
    acc[1] += d * d;
    return 0.0f;
  } else {
    const float xh = (x - ch.mean) * ch.invstd;
    const float z = RES ? xh * ch.w + ch.b + r : xh * ch.w + ch.b;
    if constexpr (MODE == kFwd) {
      return gate_y<ACT>(z, ch.om, neg);
    } else {
      float dz, contrib;
      gate_bwd<ACT>(z, dy, ch.om, neg, dz, contrib);
      if constexpr (MODE == kReduce) {
        acc[0] += dz;
        acc[1] += dz * xh;
        acc[2] += contrib;
        return 0.0f;
      } else {
        if constexpr (RES) dr = dz;
        return ch.w * ch.invstd * (dz - ch.ca - xh * ch.cb);
      }
    }
  }
}

template <int MODE>
constexpr bool kReads = MODE == kReduce || MODE == kApply;  // dy
template <int MODE>
constexpr bool kWrites = MODE == kFwd || MODE == kApply;

// The tensors of a pass, each laid out as x: dy (reduce, apply), out (fwd: y, apply: dx), the
// residual r and its gradient dr (RES; dr written by apply).
template <typename T>
struct Ptrs {
  const T* __restrict__ x;
  const T* __restrict__ dy;
  const T* __restrict__ r;
  T* __restrict__ out;
  T* __restrict__ dr;
};

// VEC consecutive elements at x + at (a multiple of VEC), through one 16-byte access when VEC > 1.
template <typename T, int VEC, int MODE, int ACT, bool RES>
__device__ __forceinline__ void vector(const Ptrs<T>& q, int64_t at, const Channel* ch, int ch_stride,
                                       float neg, float* acc) {
  const Packed<T, VEC> xin = *reinterpret_cast<const Packed<T, VEC>*>(q.x + at);
  Packed<T, VEC> gin, rin, res, dres;
  if constexpr (kReads<MODE>) gin = *reinterpret_cast<const Packed<T, VEC>*>(q.dy + at);
  if constexpr (RES) rin = *reinterpret_cast<const Packed<T, VEC>*>(q.r + at);
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    const float g = kReads<MODE> ? to_f(gin.v[k]) : 0.0f;
    const float rv = RES ? to_f(rin.v[k]) : 0.0f;
    float dr = 0.0f;
    const float v = element<MODE, ACT, RES>(to_f(xin.v[k]), g, rv, dr, ch[k * ch_stride], neg,
                                            acc + k * ch_stride * kSums<MODE>);
    if constexpr (kWrites<MODE>) res.v[k] = from_f<T>(v);
    if constexpr (RES && MODE == kApply) dres.v[k] = from_f<T>(dr);
  }
  if constexpr (kWrites<MODE>) *reinterpret_cast<Packed<T, VEC>*>(q.out + at) = res;
  if constexpr (RES && MODE == kApply) *reinterpret_cast<Packed<T, VEC>*>(q.dr + at) = dres;
}

// "rows": unit u = (row r, segment s) per warp; SV vectors per row (S = SV * VEC), nseg segments.
template <typename T, int VEC, int MODE, int ACT, bool RES>
__global__ void __launch_bounds__(kThreads)
    bn_rows_kernel(Ptrs<T> q, float* __restrict__ partials, Params p, int64_t units, int64_t nseg, int64_t C,
                   int64_t SV, float neg) {
  constexpr int NS = kSums<MODE>;
  constexpr int64_t kSegV = kSeg / VEC;
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); u < units; u += warps) {
    const int64_t r = u / nseg, s = u % nseg;
    const Channel ch = channel<MODE>(p, r % C);
    float acc[NS > 0 ? NS : 1];
#pragma unroll
    for (int j = 0; j < (NS > 0 ? NS : 1); ++j) acc[j] = 0.0f;
    const int64_t end = (s + 1) * kSegV < SV ? (s + 1) * kSegV : SV;
    for (int64_t j = s * kSegV + lane; j < end; j += 32) {
      vector<T, VEC, MODE, ACT, RES>(q, VEC * (r * SV + j), &ch, 0, neg, acc);
    }
    if constexpr (NS > 0) {
#pragma unroll
      for (int j = 0; j < NS; ++j) {
        float v = acc[j];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
        if (lane == 0) partials[u * NS + j] = v;  // [N, C, nseg, NS]
      }
    }
  }
}

// "cols": thread (ro, cv) owns channels cv*VEC.. of the rows ro, ro + rows_per_iter, ... of its
// block's row range; CV = C / VEC vectors per row.
template <typename T, int VEC, int MODE, int ACT, bool RES>
__global__ void __launch_bounds__(kThreads)
    bn_cols_kernel(Ptrs<T> q, float* __restrict__ partials, Params p, int64_t M, int64_t CV,
                   int rows_per_iter, int64_t rows_per_block, float neg) {
  constexpr int NS = kSums<MODE>;
  __shared__ float red[NS > 0 ? kThreads * VEC * NS : 1];
  int ro = 0;
  int64_t cv = 0;
  bool active = true;
  if (rows_per_iter > 1) {
    ro = threadIdx.x / static_cast<int>(CV);
    cv = threadIdx.x % CV;
    active = ro < rows_per_iter;
  } else {
    cv = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
    active = cv < CV;
  }
  const int64_t C = CV * VEC;
  float acc[VEC * (NS > 0 ? NS : 1)];
#pragma unroll
  for (int j = 0; j < VEC * (NS > 0 ? NS : 1); ++j) acc[j] = 0.0f;
  if (active) {
    Channel ch[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) ch[k] = channel<MODE>(p, cv * VEC + k);
    const int64_t r0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
    const int64_t r1 = r0 + rows_per_block < M ? r0 + rows_per_block : M;
    for (int64_t r = r0 + ro; r < r1; r += rows_per_iter) {
      vector<T, VEC, MODE, ACT, RES>(q, VEC * (r * CV + cv), ch, 1, neg, acc);
    }
  }
  if constexpr (NS > 0) {
    // acc[k * NS + j]: sum j of channel cv*VEC + k. partials [row blocks, NS, C]
    float* row = partials + static_cast<int64_t>(blockIdx.x) * NS * C;
    if (rows_per_iter == 1) {
      if (active) {
#pragma unroll
        for (int k = 0; k < VEC; ++k)
#pragma unroll
          for (int j = 0; j < NS; ++j) row[j * C + cv * VEC + k] = acc[k * NS + j];
      }
      return;
    }
#pragma unroll
    for (int j = 0; j < VEC * NS; ++j) red[threadIdx.x * VEC * NS + j] = acc[j];
    __syncthreads();
    if (active && ro == 0) {  // the block's rows added in ro order
#pragma unroll
      for (int k = 0; k < VEC; ++k)
#pragma unroll
        for (int j = 0; j < NS; ++j) {
          float s = 0.0f;
          for (int q = 0; q < rows_per_iter; ++q) s += red[((q * CV + cv) * VEC + k) * NS + j];
          row[j * C + cv * VEC + k] = s;
        }
    }
  }
}

struct Shape {
  bool cl;
  int64_t N, C, S;
};

Shape shape_of(const at::Tensor& x) {
  const int64_t N = x.size(0), C = x.size(1);
  const int64_t S = N * C > 0 ? x.numel() / (N * C) : 0;
  const bool cl = !x.is_contiguous();
  TORCH_CHECK(!cl || (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)),
              "bn_gate: x must be contiguous or channels_last, got strides ", x.strides());
  return {cl, N, C, S};
}

template <int MODE, bool RES>
at::Tensor run_as(const at::Tensor& x, const at::Tensor* dy, at::Tensor* out, const Params& p, int64_t act,
                  double neg, const at::Tensor* r, at::Tensor* dr) {
  constexpr int NS = kSums<MODE>;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Shape sh = shape_of(x);
  const float ng = static_cast<float>(neg);
  at::Tensor partials;
  ALPHAKERN_DISPATCH_ACT(x.scalar_type(), "bn_gate", MODE == kStats ? 0 : act, [&] {
    constexpr int V = 16 / sizeof(T);
    constexpr int F = MODE == kStats ? 0 : ACT;  // the statistics do not depend on f: one kernel
    const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
    const T* dyp = dy ? reinterpret_cast<const T*>(dy->const_data_ptr()) : nullptr;
    T* op = out ? reinterpret_cast<T*>(out->mutable_data_ptr()) : nullptr;
    const T* rp = r ? reinterpret_cast<const T*>(r->const_data_ptr()) : nullptr;
    T* drp = dr ? reinterpret_cast<T*>(dr->mutable_data_ptr()) : nullptr;
    const Ptrs<T> q{xp, dyp, rp, op, drp};
    const bool aligned = aligned16(xp) && (!dyp || aligned16(dyp)) && (!op || aligned16(op)) &&
                         (!rp || aligned16(rp)) && (!drp || aligned16(drp));
    float* pp = nullptr;
    if (sh.cl) {
      const int64_t M = sh.N * sh.S;
      const bool vec = sh.C % V == 0 && aligned;
      const int64_t CV = vec ? sh.C / V : sh.C;
      const int rows_per_iter = CV <= kThreads ? static_cast<int>(kThreads / CV) : 1;
      const int64_t col_blocks = CV <= kThreads ? 1 : (CV + kThreads - 1) / kThreads;
      const int64_t groups = (M + rows_per_iter - 1) / rows_per_iter;
      const int64_t row_blocks = std::max<int64_t>(1, std::min(groups, kMaxRowBlocks));
      const int64_t per_block = rows_per_iter * ((groups + row_blocks - 1) / row_blocks);
      const int64_t used = (M + per_block - 1) / per_block;  // blocks with rows (no empty partials)
      if (NS > 0) {
        partials = at::empty({used, NS, sh.C}, x.options().dtype(at::kFloat));
        pp = partials.mutable_data_ptr<float>();
      }
      const dim3 grid(static_cast<unsigned>(used), static_cast<unsigned>(col_blocks));
      if (vec) {
        bn_cols_kernel<T, V, MODE, F, RES>
            <<<grid, kThreads, 0, stream>>>(q, pp, p, M, CV, rows_per_iter, per_block, ng);
      } else {
        bn_cols_kernel<T, 1, MODE, F, RES>
            <<<grid, kThreads, 0, stream>>>(q, pp, p, M, CV, rows_per_iter, per_block, ng);
      }
    } else {
      const bool vec = sh.S % V == 0 && aligned;
      const int64_t SV = vec ? sh.S / V : sh.S;
      const int64_t seg_v = vec ? kSeg / V : kSeg;
      const int64_t nseg = std::max<int64_t>(1, (SV + seg_v - 1) / seg_v);
      const int64_t units = sh.N * sh.C * nseg;
      if (NS > 0) {
        partials = at::empty({sh.N, sh.C, nseg, NS}, x.options().dtype(at::kFloat));
        pp = partials.mutable_data_ptr<float>();
      }
      const int64_t needed = (units + kWarps - 1) / kWarps;
      if (vec) {
        const int grid = static_cast<int>(
            std::min<int64_t>(needed, 32 * wave_blocks<bn_rows_kernel<T, V, MODE, F, RES>>(kThreads)));
        bn_rows_kernel<T, V, MODE, F, RES>
            <<<grid, kThreads, 0, stream>>>(q, pp, p, units, nseg, sh.C, SV, ng);
      } else {
        const int grid = static_cast<int>(
            std::min<int64_t>(needed, 32 * wave_blocks<bn_rows_kernel<T, 1, MODE, F, RES>>(kThreads)));
        bn_rows_kernel<T, 1, MODE, F, RES>
            <<<grid, kThreads, 0, stream>>>(q, pp, p, units, nseg, sh.C, SV, ng);
      }
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if constexpr (NS == 0) {
    return at::Tensor();
  } else {
    // fp64, a fixed order over the units whatever the grid: [NS, C]
    const at::Tensor d = partials.to(at::kDouble);
    // IntArrayRef spelled out: a bare {0, 2} also converts to a DimnameList (ambiguous in torch 2.11)
    return sh.cl ? d.sum(0) : d.sum(at::IntArrayRef{0, 2}).t().contiguous();
  }
}

// Runs MODE over x (dy, out, r, dr: null where the pass has none); returns the fp64 sums [NS, C] (an
// undefined tensor for fwd/apply).
template <int MODE>
at::Tensor run(const at::Tensor& x, const at::Tensor* dy, at::Tensor* out, const Params& p, int64_t act,
               double neg, const at::Tensor* r = nullptr, at::Tensor* dr = nullptr) {
  if constexpr (MODE != kStats) {  // the statistics read x alone: no residual instantiation
    if (r) return run_as<MODE, true>(x, dy, out, p, act, neg, r, dr);
  }
  return run_as<MODE, false>(x, dy, out, p, act, neg, r, dr);
}

Params params_of(const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                 const at::Tensor& slopes, const at::Tensor* ca = nullptr, const at::Tensor* cb = nullptr) {
  return {mean.const_data_ptr<float>(),
          invstd.const_data_ptr<float>(),
          w.const_data_ptr<float>(),
          b.const_data_ptr<float>(),
          slopes.const_data_ptr<float>(),
          ca ? ca->const_data_ptr<float>() : nullptr,
          cb ? cb->const_data_ptr<float>() : nullptr};
}

}  // namespace

// x: [N, C, ...] contiguous or channels_last, CUDA, fp32/fp16/bf16, checked by the ops below;
// the per-channel tensors fp32 [C] on x's device; dy and out laid out as x.
std::tuple<at::Tensor, at::Tensor> launch_bn_stats(const at::Tensor& x) {
  // the shift k per channel (common/bn_shift.h): var = E[d^2] - E[d]^2 of d = x - k, no cancellation
  const at::Tensor shift = bn_shift(x);
  Params p{};
  p.mean = shift.const_data_ptr<float>();
  const at::Tensor sums = run<kStats>(x, nullptr, nullptr, p, 0, 0.0);
  const double count = static_cast<double>(x.numel() / x.size(1));
  const at::Tensor m = sums[0] / count;
  const at::Tensor var = (sums[1] / count - m * m).clamp_min(0.0);
  return {(shift.to(at::kDouble) + m).to(at::kFloat), var.to(at::kFloat)};
}

// r: the residual (bn_add_gate_*), null for bn_gate_*; dr its gradient, written where r is given.
void launch_bn_gate_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& mean, const at::Tensor& invstd,
                        const at::Tensor& w, const at::Tensor& b, const at::Tensor& slopes, int64_t act,
                        double neg, const at::Tensor* r) {
  run<kFwd>(x, nullptr, &y, params_of(mean, invstd, w, b, slopes), act, neg, r);
}

at::Tensor launch_bn_gate_bwd_reduce(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                     const at::Tensor& invstd, const at::Tensor& w, const at::Tensor& b,
                                     const at::Tensor& slopes, int64_t act, double neg, const at::Tensor* r) {
  return run<kReduce>(x, &dy, nullptr, params_of(mean, invstd, w, b, slopes), act, neg, r);
}

void launch_bn_gate_bwd_apply(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                              const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& w,
                              const at::Tensor& b, const at::Tensor& slopes, const at::Tensor& ca,
                              const at::Tensor& cb, int64_t act, double neg, const at::Tensor* r,
                              at::Tensor* dr) {
  run<kApply>(x, &dy, &dx, params_of(mean, invstd, w, b, slopes, &ca, &cb), act, neg, r, dr);
}

// -- the ops: checks, device guard, allocation, then the launchers above ----------------------------

namespace {

constexpr const Backend& kB = kCudaBackend;

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
}

}  // namespace alphakern
