// SA_CHECK(cond, parts...): throws std::runtime_error (RuntimeError in Python) whose message is
// exactly the concatenated parts, with no source-location prefix: messages are for users.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace sigmoid_attn::detail {

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  throw std::runtime_error(s.str());
}

}  // namespace sigmoid_attn::detail

#define SA_CHECK(cond, ...)                                      \
  do {                                                           \
    if (__builtin_expect(!(cond), 0)) {                          \
      ::sigmoid_attn::detail::fail(__VA_ARGS__);                 \
    }                                                            \
  } while (0)
