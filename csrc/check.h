// SA_CHECK(cond, parts...): throws std::runtime_error (RuntimeError in Python) whose message is
// exactly the concatenated parts, with no source-location prefix: messages are for users.
//
// Messages are built with std::string and std::to_string, not iostreams: on the GPU machine's
// torch 2.11 build, formatting an integer through an ostringstream inside this library crashed
// (SIGSEGV in basic_ostream::_M_insert<long>), and the ops library has no other use for them.
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace sigmoid_attn::detail {

inline void append(std::string& s, const char* x) { s += x; }
inline void append(std::string& s, const std::string& x) { s += x; }
inline void append(std::string& s, double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", x);
  s += buf;
}
template <typename T, typename = std::enable_if_t<std::is_integral_v<T>>>
inline void append(std::string& s, T x) {
  if constexpr (std::is_same_v<T, bool>) {
    s += x ? "true" : "false";
  } else if constexpr (std::is_signed_v<T>) {
    s += std::to_string(static_cast<long long>(x));
  } else {
    s += std::to_string(static_cast<unsigned long long>(x));
  }
}

template <typename... Args>
std::string str(const Args&... args) {
  std::string s;
  (append(s, args), ...);
  return s;
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw std::runtime_error(str(args...));
}

}  // namespace sigmoid_attn::detail

#define SA_CHECK(cond, ...)                                      \
  do {                                                           \
    if (__builtin_expect(!(cond), 0)) {                          \
      ::sigmoid_attn::detail::fail(__VA_ARGS__);                 \
    }                                                            \
  } while (0)
