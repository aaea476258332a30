// The activation codes of the native ops' `act` argument (alphakern/ops/core/activations.py CODES:
// 0 relu, 1 relu6, 2 leaky_relu, 3 gelu, 4 gelu_tanh, 5 silu, 6 hardswish) and the one switch that
// turns a runtime code into a template argument, for the CPU and CUDA libraries alike.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>

namespace alphakern {

inline constexpr int kNumActivations = 7;

// f(std::integral_constant<int, ACT>{}) for act in 0..6; any other code is an error naming it.
template <typename F>
decltype(auto) with_activation(int64_t act, const char* backend, const F& f) {
  TORCH_CHECK(act >= 0 && act < kNumActivations, "alphakern (", backend,
              " backend): act must be an activation code 0..6, got ", act);
  switch (act) {
    case 0:
      return f(std::integral_constant<int, 0>{});
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 3:
      return f(std::integral_constant<int, 3>{});
    case 4:
      return f(std::integral_constant<int, 4>{});
    case 5:
      return f(std::integral_constant<int, 5>{});
    default:
      return f(std::integral_constant<int, 6>{});
  }
}

}  // namespace alphakern
