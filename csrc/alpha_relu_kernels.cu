// CUDA kernels for R_alpha(x) = x + alpha * relu(-x), alpha = sigmoid((sigmoid(gamma) - 1/2) * nu).
//
// Same semantics as the Triton backend: alpha and its chain rule are computed on the device from
// gamma and nu (fp32, in device memory: no host sync), all math in fp32, slope 1 at x = +-0, NaN
// propagates into y and dgamma. Memory-bound design: a grid-stride loop over 16-byte vectors when
// every pointer is 16-byte aligned (a scalar loop otherwise and for the tail), a grid sized from
// the SM count, 64-bit indices. dgamma: one fp32 partial per block, then one block sums the
// partials in a fixed order -- no atomics, so backward is bitwise reproducible on a given GPU.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace alphakern {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 8;
constexpr int kFinalThreads = 1024;

__device__ __forceinline__ float sigmoidf(float v) { return 1.0f / (1.0f + expf(-v)); }

struct Alpha {
  float a;       // alpha
  float dadg;    // d alpha / d gamma
};

__device__ __forceinline__ Alpha load_alpha(const float* gamma, const float* nu) {
  const float s = sigmoidf(__ldg(gamma));
  const float n = __ldg(nu);
  const float a = sigmoidf((s - 0.5f) * n);
  return {a, a * (1.0f - a) * n * s * (1.0f - s)};
}

template <typename T> __device__ __forceinline__ float to_f(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_f(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }

// relu(-x) written so NaN propagates (x > 0 is false for NaN) and x = -inf gives NaN in y, as the
// eager expression does.
__device__ __forceinline__ float neg_part(float x) { return x > 0.0f ? 0.0f : -x; }
__device__ __forceinline__ float fwd_elem(float x, float a) { return x + a * neg_part(x); }
// Slope 1 at x = +-0 (autograd of relu), 1 - alpha below zero and at NaN (as eager autograd).
__device__ __forceinline__ float bwd_elem(float x, float dy, float a) {
  return x >= 0.0f ? dy : dy * (1.0f - a);
}

template <typename T, int N>
struct alignas(16) Vec {
  T v[N];
};

template <typename T>
__global__ void alpha_relu_fwd_kernel(const T* __restrict__ x, T* __restrict__ y,
                                      const float* __restrict__ gamma,
                                      const float* __restrict__ nu, int64_t n, bool vectorized) {
  constexpr int N = 16 / sizeof(T);
  const float a = load_alpha(gamma, nu).a;
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
      for (int k = 0; k < N; ++k) out.v[k] = from_f<T>(fwd_elem(to_f(in.v[k]), a));
      yv[j] = out;
    }
    done = n_vec * N;
  }
  for (int64_t j = done + i; j < n; j += stride) y[j] = from_f<T>(fwd_elem(to_f(x[j]), a));
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

template <typename T>
__global__ void __launch_bounds__(kThreads)
    alpha_relu_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                          float* __restrict__ partials, const float* __restrict__ gamma,
                          const float* __restrict__ nu, int64_t n, bool vectorized) {
  constexpr int N = 16 / sizeof(T);
  const float a = load_alpha(gamma, nu).a;
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
        const float xf = to_f(xin.v[k]), g = to_f(gin.v[k]);
        out.v[k] = from_f<T>(bwd_elem(xf, g, a));
        acc += g * neg_part(xf);
      }
      dxv[j] = out;
    }
    done = n_vec * N;
  }
  for (int64_t j = done + i; j < n; j += stride) {
    const float xf = to_f(x[j]), g = to_f(dy[j]);
    dx[j] = from_f<T>(bwd_elem(xf, g, a));
    acc += g * neg_part(xf);
  }
  const float total = block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kFinalThreads)
    alpha_relu_dgamma_kernel(const float* __restrict__ partials, int64_t n_partials,
                             const float* __restrict__ gamma, const float* __restrict__ nu,
                             float* __restrict__ dgamma) {
  float acc = 0.0f;
  for (int64_t j = threadIdx.x; j < n_partials; j += kFinalThreads) acc += partials[j];
  const float total = block_sum<kFinalThreads>(acc);
  if (threadIdx.x == 0) *dgamma = total * load_alpha(gamma, nu).dadg;
}

int sm_count() {  // of the current device (the caller's device guard chose it)
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return sms;
}

int grid_for(int64_t n, int elems_per_thread) {
  const int64_t sms = sm_count();
  const int64_t needed = (n + int64_t(kThreads) * elems_per_thread - 1) / (int64_t(kThreads) * elems_per_thread);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, sms * kBlocksPerSm)));
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// fp32, fp16, bf16 only: the op rejects other dtypes before launching.
#define ALPHAKERN_DISPATCH(TYPE, NAME, ...)                            \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                       \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)         \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)          \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

template <typename T> struct CudaType { using type = T; };
template <> struct CudaType<at::Half> { using type = __half; };
template <> struct CudaType<at::BFloat16> { using type = __nv_bfloat16; };

}  // namespace

// x, y: dense tensors of equal strides; gamma, nu: 1-element fp32 tensors on x's device.
void launch_alpha_relu_fwd(const at::Tensor& x, at::Tensor& y, const at::Tensor& gamma,
                           const at::Tensor& nu) {
  const int64_t n = x.numel();
  if (n == 0) return;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  ALPHAKERN_DISPATCH(x.scalar_type(), "alpha_relu_fwd", [&] {
    using T = typename CudaType<scalar_t>::type;
    const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
    T* yp = reinterpret_cast<T*>(y.mutable_data_ptr());
    const bool vec = aligned16(xp) && aligned16(yp);
    alpha_relu_fwd_kernel<T><<<grid_for(n, vec ? 16 / sizeof(T) : 1), kThreads, 0, stream>>>(
        xp, yp, gamma.const_data_ptr<float>(), nu.const_data_ptr<float>(), n, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// dy, x, dx: dense tensors of equal strides; dgamma: a 1-element fp32 tensor.
void launch_alpha_relu_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx,
                           at::Tensor& dgamma, const at::Tensor& gamma, const at::Tensor& nu) {
  const int64_t n = x.numel();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (n == 0) {
    dgamma.zero_();
    return;
  }
  ALPHAKERN_DISPATCH(x.scalar_type(), "alpha_relu_bwd", [&] {
    using T = typename CudaType<scalar_t>::type;
    const T* dyp = reinterpret_cast<const T*>(dy.const_data_ptr());
    const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
    T* dxp = reinterpret_cast<T*>(dx.mutable_data_ptr());
    const bool vec = aligned16(dyp) && aligned16(xp) && aligned16(dxp);
    const int grid = grid_for(n, vec ? 16 / sizeof(T) : 1);
    at::Tensor partials = at::empty({grid}, x.options().dtype(at::kFloat));
    alpha_relu_bwd_kernel<T><<<grid, kThreads, 0, stream>>>(
        dyp, xp, dxp, partials.mutable_data_ptr<float>(), gamma.const_data_ptr<float>(),
        nu.const_data_ptr<float>(), n, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    alpha_relu_dgamma_kernel<<<1, kFinalThreads, 0, stream>>>(
        partials.const_data_ptr<float>(), grid, gamma.const_data_ptr<float>(),
        nu.const_data_ptr<float>(), dgamma.mutable_data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace alphakern
