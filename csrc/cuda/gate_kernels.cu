// CUDA kernels for per-channel and per-element gates: x (flat, memory order) seen as
//   "cols" [A, G]: the gate is the column (per element; per channel with a small channel stride,
//                  the host repeating each channel's slope over it; channels_last),
//   "rows" [A*C, B]: rows of B elements, one channel each (NCHW with large H*W),
// as laid out by alphakern/ops/core/gate_layout.py. The host passes the slopes 1 - alpha per gate
// (fp32, from fp64 math); the kernels return dx and fp32 sums of dy*(f(x) - x) per gate (f = relu:
// dy*relu(-x)), and the host applies the chain rule. f is the template argument ACT, with the
// element math of the layer kernels (elementwise.cuh). dgamma partials: per (row block, column) in "cols",
// per row in "rows", reduced by one fixed-order column-sum kernel: no atomics, and a partition that depends
// on the shapes only, never on the GPU.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include "../common/cuda_utils.cuh"
#include "elementwise.cuh"

#include <algorithm>
#include <cstdint>

namespace alphakern {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxPartials = int64_t(1) << 22;  // bounds the "cols" partial buffer (16 MiB)
constexpr int64_t kMaxRowBlocks = 65535;

// Thread -> (row offset in the block's row group, column vector). With few column vectors a
// block covers several rows at once; with many, blockIdx.y picks the column chunk.
struct ColsThread {
  int ro;
  int64_t cv;
  bool active;
};

__device__ __forceinline__ ColsThread cols_thread(int64_t GV, int rows_per_iter) {
  if (rows_per_iter > 1) {
    const int ro = threadIdx.x / static_cast<int>(GV);
    return {ro, threadIdx.x % GV, ro < rows_per_iter};
  }
  const int64_t cv = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
  return {0, cv, cv < GV};
}

template <typename T, int VEC, int ACT>
__global__ void __launch_bounds__(kThreads)
    gates_cols_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, const float* __restrict__ slopes,
                          int64_t A, int64_t GV, int rows_per_iter, float neg) {
  const ColsThread t = cols_thread(GV, rows_per_iter);
  if (!t.active) return;
  float om[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) om[k] = slopes[t.cv * VEC + k];  // once per thread
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * rows_per_iter + t.ro; r < A;
       r += static_cast<int64_t>(gridDim.x) * rows_per_iter) {
    const int64_t at = (r * GV + t.cv) * VEC;  // a multiple of VEC, visibly to the compiler
    const Packed<T, VEC> in = *reinterpret_cast<const Packed<T, VEC>*>(x + at);
    Packed<T, VEC> out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) out.v[k] = from_f<T>(gate_y<ACT>(to_f(in.v[k]), om[k], neg));
    *reinterpret_cast<Packed<T, VEC>*>(y + at) = out;
  }
}

// 3 resident blocks per SM at the least (85 registers a thread): without the bound ptxas held the
// 8-wide silu / gelu_tanh instantiations to 64 registers and spilled.
template <typename T, int VEC, int ACT>
__global__ void __launch_bounds__(kThreads, 3)
    gates_cols_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                          float* __restrict__ partials, const float* __restrict__ slopes, int64_t A,
                          int64_t GV, int rows_per_iter, float neg) {
  __shared__ float red[kThreads * VEC];
  const ColsThread t = cols_thread(GV, rows_per_iter);
  const int64_t G = GV * VEC;
  float acc[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) acc[k] = 0.0f;
  if (t.active) {
    float om[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) om[k] = slopes[t.cv * VEC + k];
    for (int64_t r = static_cast<int64_t>(blockIdx.x) * rows_per_iter + t.ro; r < A;
         r += static_cast<int64_t>(gridDim.x) * rows_per_iter) {
      const int64_t at = (r * GV + t.cv) * VEC;  // a multiple of VEC, visibly to the compiler
      const Packed<T, VEC> xin = *reinterpret_cast<const Packed<T, VEC>*>(x + at);
      const Packed<T, VEC> gin = *reinterpret_cast<const Packed<T, VEC>*>(dy + at);
      Packed<T, VEC> out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        float d, c;
        gate_bwd<ACT>(to_f(xin.v[k]), to_f(gin.v[k]), om[k], neg, d, c);
        out.v[k] = from_f<T>(d);
        acc[k] += c;
      }
      *reinterpret_cast<Packed<T, VEC>*>(dx + at) = out;
    }
  }
  float* row = partials + static_cast<int64_t>(blockIdx.x) * G;
  if (rows_per_iter == 1) {  // one thread per column of this block: its sum is the partial
    if (t.active) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) row[t.cv * VEC + k] = acc[k];
    }
    return;
  }
  // threads (ro, cv) with the same cv hold sums of one column: add them in ro order
#pragma unroll
  for (int k = 0; k < VEC; ++k) red[threadIdx.x * VEC + k] = acc[k];
  __syncthreads();
  if (t.active && t.ro == 0) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      float s = 0.0f;
      for (int j = 0; j < rows_per_iter; ++j) s += red[(j * GV + t.cv) * VEC + k];
      row[t.cv * VEC + k] = s;
    }
  }
}

// "rows": one warp per row of B elements (BV vectors), one slope per row; the backward's partial
// is the row's sum, so it does not depend on the grid at all.
template <typename T, int VEC, int ACT>
__global__ void __launch_bounds__(kThreads)
    gates_rows_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, const float* __restrict__ slopes,
                          int64_t R, int64_t C, int64_t BV, float neg) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); r < R; r += warps) {
    const float om = slopes[r % C];
    const int64_t base = r * BV * VEC;
    for (int64_t j = lane; j < BV; j += 32) {
      const Packed<T, VEC> in = *reinterpret_cast<const Packed<T, VEC>*>(x + base + j * VEC);
      Packed<T, VEC> out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) out.v[k] = from_f<T>(gate_y<ACT>(to_f(in.v[k]), om, neg));
      *reinterpret_cast<Packed<T, VEC>*>(y + base + j * VEC) = out;
    }
  }
}

template <typename T, int VEC, int ACT>
__global__ void __launch_bounds__(kThreads)
    gates_rows_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                          float* __restrict__ row_sums, const float* __restrict__ slopes, int64_t R,
                          int64_t C, int64_t BV, float neg) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); r < R; r += warps) {
    const float om = slopes[r % C];
    const int64_t base = r * BV * VEC;
    float acc = 0.0f;
    for (int64_t j = lane; j < BV; j += 32) {
      const Packed<T, VEC> xin = *reinterpret_cast<const Packed<T, VEC>*>(x + base + j * VEC);
      const Packed<T, VEC> gin = *reinterpret_cast<const Packed<T, VEC>*>(dy + base + j * VEC);
      Packed<T, VEC> out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        float d, c;
        gate_bwd<ACT>(to_f(xin.v[k]), to_f(gin.v[k]), om, neg, d, c);
        out.v[k] = from_f<T>(d);
        acc += c;
      }
      *reinterpret_cast<Packed<T, VEC>*>(dx + base + j * VEC) = out;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) row_sums[r] = acc;  // [A, C] row-major: the channel is the column
  }
}

// out[g] = sum_k partials[k, g]: 32 running sums per column (rows k = ty mod 32), then added in
// ty order. Fixed order whatever the GPU.
__global__ void __launch_bounds__(1024)
    gates_colsum_kernel(const float* __restrict__ partials, float* __restrict__ out, int64_t K, int64_t G) {
  __shared__ float red[32][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int64_t g = static_cast<int64_t>(blockIdx.x) * 32 + tx;
  float s = 0.0f;
  if (g < G) {
    for (int64_t k = ty; k < K; k += 32) s += partials[k * G + g];
  }
  red[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && g < G) {
    float total = 0.0f;
    for (int j = 0; j < 32; ++j) total += red[j][tx];
    out[g] = total;
  }
}

// Column geometry: rows covered per block iteration and blocks along the columns.
struct ColsGrid {
  int rows_per_iter;
  dim3 grid;
};

ColsGrid cols_grid(int64_t A, int64_t GV, int64_t G) {
  const int rows_per_iter = GV <= kThreads ? static_cast<int>(kThreads / GV) : 1;
  const int64_t col_blocks = GV <= kThreads ? 1 : (GV + kThreads - 1) / kThreads;
  const int64_t row_groups = (A + rows_per_iter - 1) / rows_per_iter;
  const int64_t row_blocks = std::max<int64_t>(1, std::min({row_groups, kMaxRowBlocks, kMaxPartials / G}));
  return {rows_per_iter, dim3(static_cast<unsigned>(row_blocks), static_cast<unsigned>(col_blocks))};
}

at::Tensor column_sums(const at::Tensor& partials, int64_t K, int64_t G, cudaStream_t stream) {
  at::Tensor sums = at::empty({G}, partials.options());
  gates_colsum_kernel<<<static_cast<unsigned>((G + 31) / 32), 1024, 0, stream>>>(
      partials.const_data_ptr<float>(), sums.mutable_data_ptr<float>(), K, G);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return sums;
}

}  // namespace

// x, y: flat dense tensors of A*G elements; slopes: fp32 [G] on x's device; act, neg: f.
void launch_gates_cols_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& slopes, int64_t A, int64_t G,
                           int64_t act, double neg) {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const float ng = static_cast<float>(neg);
  ALPHAKERN_DISPATCH_ACT(x.scalar_type(), "gates_cols_fwd", act, [&] {
    constexpr int N = 16 / sizeof(T);
    const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
    T* yp = reinterpret_cast<T*>(y.mutable_data_ptr());
    const float* sl = slopes.const_data_ptr<float>();
    if (G % N == 0 && aligned16(xp) && aligned16(yp)) {
      const ColsGrid c = cols_grid(A, G / N, G);
      gates_cols_fwd_kernel<T, N, ACT>
          <<<c.grid, kThreads, 0, stream>>>(xp, yp, sl, A, G / N, c.rows_per_iter, ng);
    } else {
      const ColsGrid c = cols_grid(A, G, G);
      gates_cols_fwd_kernel<T, 1, ACT>
          <<<c.grid, kThreads, 0, stream>>>(xp, yp, sl, A, G, c.rows_per_iter, ng);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// returns the fp32 sums of dy*(f(x) - x) per column
at::Tensor launch_gates_cols_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                                 const at::Tensor& slopes, int64_t A, int64_t G, int64_t act, double neg) {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const float ng = static_cast<float>(neg);
  at::Tensor sums;
  ALPHAKERN_DISPATCH_ACT(x.scalar_type(), "gates_cols_bwd", act, [&] {
    constexpr int N = 16 / sizeof(T);
    const T* dyp = reinterpret_cast<const T*>(dy.const_data_ptr());
    const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
    T* dxp = reinterpret_cast<T*>(dx.mutable_data_ptr());
    const float* sl = slopes.const_data_ptr<float>();
    const bool vec = G % N == 0 && aligned16(dyp) && aligned16(xp) && aligned16(dxp);
    const ColsGrid c = cols_grid(A, vec ? G / N : G, G);
    at::Tensor partials = at::empty({static_cast<int64_t>(c.grid.x), G}, x.options().dtype(at::kFloat));
    float* pp = partials.mutable_data_ptr<float>();
    if (vec) {
      gates_cols_bwd_kernel<T, N, ACT>
          <<<c.grid, kThreads, 0, stream>>>(dyp, xp, dxp, pp, sl, A, G / N, c.rows_per_iter, ng);
    } else {
      gates_cols_bwd_kernel<T, 1, ACT>
          <<<c.grid, kThreads, 0, stream>>>(dyp, xp, dxp, pp, sl, A, G, c.rows_per_iter, ng);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    sums = column_sums(partials, c.grid.x, G, stream);
  });
  return sums;
}

// x, y: flat dense tensors of A*C*B elements; slopes: fp32 [C].
void launch_gates_rows_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& slopes, int64_t C, int64_t B,
                           int64_t act, double neg) {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t R = x.numel() / B;
  const float ng = static_cast<float>(neg);
  ALPHAKERN_DISPATCH_ACT(x.scalar_type(), "gates_rows_fwd", act, [&] {
    constexpr int N = 16 / sizeof(T);
    const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
    T* yp = reinterpret_cast<T*>(y.mutable_data_ptr());
    const float* sl = slopes.const_data_ptr<float>();
    const int64_t needed = (R + kWarps - 1) / kWarps;
    if (B % N == 0 && aligned16(xp) && aligned16(yp)) {
      const int grid = static_cast<int>(
          std::min<int64_t>(needed, wave_blocks<gates_rows_fwd_kernel<T, N, ACT>>(kThreads)));
      gates_rows_fwd_kernel<T, N, ACT><<<grid, kThreads, 0, stream>>>(xp, yp, sl, R, C, B / N, ng);
    } else {
      const int grid = static_cast<int>(
          std::min<int64_t>(needed, wave_blocks<gates_rows_fwd_kernel<T, 1, ACT>>(kThreads)));
      gates_rows_fwd_kernel<T, 1, ACT><<<grid, kThreads, 0, stream>>>(xp, yp, sl, R, C, B, ng);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// returns the fp32 sums of dy*(f(x) - x) per channel
at::Tensor launch_gates_rows_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                                 const at::Tensor& slopes, int64_t C, int64_t B, int64_t act, double neg) {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t R = x.numel() / B;
  const float ng = static_cast<float>(neg);
  at::Tensor row_sums = at::empty({R}, x.options().dtype(at::kFloat));
  ALPHAKERN_DISPATCH_ACT(x.scalar_type(), "gates_rows_bwd", act, [&] {
    constexpr int N = 16 / sizeof(T);
    const T* dyp = reinterpret_cast<const T*>(dy.const_data_ptr());
    const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
    T* dxp = reinterpret_cast<T*>(dx.mutable_data_ptr());
    const int64_t needed = (R + kWarps - 1) / kWarps;
    float* sp = row_sums.mutable_data_ptr<float>();
    const float* slp = slopes.const_data_ptr<float>();
    if (B % N == 0 && aligned16(dyp) && aligned16(xp) && aligned16(dxp)) {
      const int grid = static_cast<int>(
          std::min<int64_t>(needed, wave_blocks<gates_rows_bwd_kernel<T, N, ACT>>(kThreads)));
      gates_rows_bwd_kernel<T, N, ACT><<<grid, kThreads, 0, stream>>>(dyp, xp, dxp, sp, slp, R, C, B / N, ng);
    } else {
      const int grid = static_cast<int>(
          std::min<int64_t>(needed, wave_blocks<gates_rows_bwd_kernel<T, 1, ACT>>(kThreads)));
      gates_rows_bwd_kernel<T, 1, ACT><<<grid, kThreads, 0, stream>>>(dyp, xp, dxp, sp, slp, R, C, B, ng);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return column_sums(row_sums, R / C, C, stream);
}

}  // namespace alphakern
