// CUDA kernels for the one-gate layer: G(x) = x + alpha * (f(x) - x), alpha = sigmoid((sigmoid(gamma)
// - 1/2) * nu); f = relu (ACT 0) is R_alpha(x) = x + alpha * relu(-x), any other f a template
// argument (elementwise.cuh).
//
// Same semantics as the Triton backend: alpha and its chain rule are computed on the device from
// gamma and nu (in fp64, from device memory: no host sync), element math in fp32, slope 1 at
// x = +-0, NaN propagates into y and dgamma. Memory-bound design: a grid-stride loop over 16-byte
// vectors when every pointer is 16-byte aligned (a scalar loop otherwise and for the tail), 64-bit
// indices; the forward grid is one wave from the occupancy API. dgamma: one fp32 partial per block
// of a grid that depends on the size only, then one block sums the partials in a fixed order --
// no atomics, so backward is bitwise reproducible, on any GPU.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include "../common/alpha_terms.h"
#include "../common/cuda_utils.cuh"
#include "elementwise.cuh"

#include <cstdint>

namespace alphakern {
namespace {

constexpr int kThreads = 256;
// 8 blocks of 256 threads fill an SM's 2048 threads; __launch_bounds__ holds relu's backward to the 32
// registers that allows (it compiled to 40, i.e. 6 blocks, without the bound). The other f's
// backward (erf/exp, both results at once) spilled at 32: 6 blocks (40 registers) for them.
template <int ACT>
constexpr int kMinBlocksPerSm = ACT == 0 ? 8 : 6;
// The backward grid's cap does not depend on the device, so neither do the dgamma partials: the
// result is bitwise the same on any GPU. It is several waves anywhere, so the last one costs little.
constexpr int kMaxBwdBlocks = 8192;
constexpr int kFinalThreads = 1024;

// A 1-element fp32 or fp64 tensor in device memory (the host converts other dtypes to fp32).
struct Scalar {
  const void* p;
  bool is_double;
};

__device__ __forceinline__ double load(Scalar s) {
  return s.is_double ? __ldg(static_cast<const double*>(s.p))
                     : static_cast<double>(__ldg(static_cast<const float*>(s.p)));
}

// fp64 terms (common/alpha_terms.h) from device memory: one scalar per thread, off the
// memory-bound path.
__device__ __forceinline__ Terms load_terms(Scalar gamma, Scalar nu) {
  return alpha_terms(load(gamma), load(nu));
}

template <typename T, int N>
struct alignas(16) Vec {
  T v[N];
};

template <typename T, int ACT>
__global__ void __launch_bounds__(kThreads)
    layer_gate_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, Scalar gamma, Scalar nu, int64_t n,
                          bool vectorized, float neg) {
  constexpr int N = 16 / sizeof(T);
  const float om = load_terms(gamma, nu).om;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vectorized) {
    const int64_t n_vec = n / N;
    auto xv = reinterpret_cast<const Vec<T, N>*>(x);
    auto yv = reinterpret_cast<Vec<T, N>*>(y);
    for (int64_t j = i; j < n_vec; j += stride) {
      Vec<T, N> in = xv[j], out;
#pragma unroll
      for (int k = 0; k < N; ++k) out.v[k] = from_f<T>(gate_y<ACT>(to_f(in.v[k]), om, neg));
      yv[j] = out;
    }
    done = n_vec * N;
  }
  for (int64_t j = done + i; j < n; j += stride) y[j] = from_f<T>(gate_y<ACT>(to_f(x[j]), om, neg));
}

// Sum of one float per thread over the block, in a fixed order (shuffles, then warp 0).
template <int THREADS>
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[THREADS / 32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < THREADS / 32 ? warp_sums[threadIdx.x] : 0.0f;
  if (warp == 0) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  }
  return v;  // valid in thread 0
}

template <typename T, int ACT>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm<ACT>)
    layer_gate_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                          float* __restrict__ partials, Scalar gamma, Scalar nu, int64_t n, bool vectorized,
                          float neg) {
  constexpr int N = 16 / sizeof(T);
  const float om = load_terms(gamma, nu).om;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  float acc = 0.0f;
  int64_t done = 0;
  if (vectorized) {
    const int64_t n_vec = n / N;
    auto xv = reinterpret_cast<const Vec<T, N>*>(x);
    auto dyv = reinterpret_cast<const Vec<T, N>*>(dy);
    auto dxv = reinterpret_cast<Vec<T, N>*>(dx);
    for (int64_t j = i; j < n_vec; j += stride) {
      Vec<T, N> xin = xv[j], gin = dyv[j], out;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        float d, c;
        gate_bwd<ACT>(to_f(xin.v[k]), to_f(gin.v[k]), om, neg, d, c);
        out.v[k] = from_f<T>(d);
        acc += c;
      }
      dxv[j] = out;
    }
    done = n_vec * N;
  }
  for (int64_t j = done + i; j < n; j += stride) {
    float d, c;
    gate_bwd<ACT>(to_f(x[j]), to_f(dy[j]), om, neg, d, c);
    dx[j] = from_f<T>(d);
    acc += c;
  }
  const float total = block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kFinalThreads)
    alpha_relu_dgamma_kernel(const float* __restrict__ partials, int64_t n_partials, Scalar gamma, Scalar nu,
                             void* __restrict__ dgamma, bool dgamma_is_double) {
  float acc = 0.0f;
  for (int64_t j = threadIdx.x; j < n_partials; j += kFinalThreads) acc += partials[j];
  const float total = block_sum<kFinalThreads>(acc);
  if (threadIdx.x == 0) {
    const double d = static_cast<double>(total) * load_terms(gamma, nu).dadg;
    if (dgamma_is_double) {
      *static_cast<double*>(dgamma) = d;
    } else {
      *static_cast<float*>(dgamma) = static_cast<float>(d);
    }
  }
}

int64_t blocks_needed(int64_t n, int elems_per_thread) {
  const int64_t per_block = int64_t(kThreads) * elems_per_thread;
  return std::max<int64_t>(1, (n + per_block - 1) / per_block);
}

Scalar scalar_arg(const at::Tensor& t) {  // the op passes fp32 or fp64 1-element tensors
  return {t.const_data_ptr(), t.scalar_type() == at::kDouble};
}

}  // namespace

// x, y: dense tensors of equal strides; gamma, nu: 1-element fp32/fp64 tensors on x's device;
// act, neg: f's code and leaky_relu's slope.
void launch_layer_gate_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& gamma, const at::Tensor& nu,
                           int64_t act, double neg) {
  const int64_t n = x.numel();
  if (n == 0) return;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  ALPHAKERN_DISPATCH_ACT(x.scalar_type(), "layer_gate_fwd", act, [&] {
    const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
    T* yp = reinterpret_cast<T*>(y.mutable_data_ptr());
    const bool vec = aligned16(xp) && aligned16(yp);
    // one full wave of resident blocks
    const int grid = static_cast<int>(std::min<int64_t>(
        blocks_needed(n, vec ? 16 / sizeof(T) : 1), wave_blocks<layer_gate_fwd_kernel<T, ACT>>(kThreads)));
    layer_gate_fwd_kernel<T, ACT><<<grid, kThreads, 0, stream>>>(xp, yp, scalar_arg(gamma), scalar_arg(nu), n,
                                                                 vec, static_cast<float>(neg));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// dy, x, dx: dense tensors of equal strides; dgamma: a 1-element fp32 or fp64 tensor.
void launch_layer_gate_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx, at::Tensor& dgamma,
                           const at::Tensor& gamma, const at::Tensor& nu, int64_t act, double neg) {
  const int64_t n = x.numel();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (n == 0) {
    dgamma.zero_();
    return;
  }
  ALPHAKERN_DISPATCH_ACT(x.scalar_type(), "layer_gate_bwd", act, [&] {
    const T* dyp = reinterpret_cast<const T*>(dy.const_data_ptr());
    const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
    T* dxp = reinterpret_cast<T*>(dx.mutable_data_ptr());
    const bool vec = aligned16(dyp) && aligned16(xp) && aligned16(dxp);
    const int grid =
        static_cast<int>(std::min<int64_t>(blocks_needed(n, vec ? 16 / sizeof(T) : 1), kMaxBwdBlocks));
    at::Tensor partials = at::empty({grid}, x.options().dtype(at::kFloat));
    layer_gate_bwd_kernel<T, ACT>
        <<<grid, kThreads, 0, stream>>>(dyp, xp, dxp, partials.mutable_data_ptr<float>(), scalar_arg(gamma),
                                        scalar_arg(nu), n, vec, static_cast<float>(neg));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    alpha_relu_dgamma_kernel<<<1, kFinalThreads, 0, stream>>>(
        partials.const_data_ptr<float>(), grid, scalar_arg(gamma), scalar_arg(nu), dgamma.mutable_data_ptr(),
        dgamma.scalar_type() == at::kDouble);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace alphakern
