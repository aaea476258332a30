// CUDA host utilities shared by the layer and gate kernels: the dtype (and f) dispatch, torch ->
// CUDA element types, 16-byte alignment, and one wave of resident blocks per kernel.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "act_codes.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>

namespace alphakern {

// fp32, fp16, bf16 only: the ops reject other dtypes before launching (common/checks.h).
#define ALPHAKERN_DISPATCH(TYPE, NAME, ...)                                                             \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                                                        \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__) \
                         AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

// The launchers' dispatch: `T` (the CUDA element type of the dtype) and `ACT` (f's code, checked)
// as compile-time names in the body.
#define ALPHAKERN_DISPATCH_ACT(TYPE, NAME, ACT_CODE, ...)  \
  ALPHAKERN_DISPATCH(TYPE, NAME, [&] {                     \
    with_activation(ACT_CODE, "cuda", [&](auto act_code) { \
      constexpr int ACT = decltype(act_code)::value;       \
      using T = typename CudaType<scalar_t>::type;         \
      __VA_ARGS__();                                       \
    });                                                    \
  })

template <typename T>
struct CudaType {
  using type = T;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// Blocks of `threads` threads of `Kernel` resident in one wave on the current device, from the
// occupancy the compiled kernel really has. Looked up once per (kernel, device) -- the template
// parameter keeps one cache per kernel -- which also keeps the query out of CUDA-graph captures.
template <auto Kernel>
int wave_blocks(int threads) {
  static std::array<std::atomic<int>, 64> cache{};
  const int dev = c10::cuda::current_device();
  int wave = dev < 64 ? cache[dev].load() : 0;
  if (wave == 0) {
    int per_sm = 0, sms = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, threads, 0));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    wave = std::max(per_sm, 1) * sms;
    if (dev < 64) cache[dev].store(wave);
  }
  return wave;
}

}  // namespace alphakern
