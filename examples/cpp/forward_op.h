// The dispatcher handle of torch.ops.sigmoid_attn.forward, typed by its schema (register.cpp),
// shared by the example programs.
#pragma once

#include <optional>

#include <ATen/core/dispatch/Dispatcher.h>

inline auto sigmoid_attn_forward_op() {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow("sigmoid_attn::forward", "")
      .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool,
                        std::optional<double>, std::optional<double>,
                        const std::optional<at::Tensor>&, const std::optional<at::Tensor>&)>();
}
