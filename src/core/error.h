// One error style for all of redhare.
//
// redhare::Error is thrown for every failure caused by something outside the program: a request,
// a checkpoint, a tokenizer or template file, a configuration value. Its message is one line that
// names what was wrong (and the file, where there is one); the top level prints it or turns it into
// an HTTP error. RH_CHECK guards internal invariants: a failure there is a bug in redhare and says
// where it happened.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace redhare {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
[[noreturn]] void invariant_failed(const char* cond, const char* file, int line,
                                   const std::string& msg);
}  // namespace detail

// Throws redhare::Error with the arguments streamed together into one message.
template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

}  // namespace redhare

// Internal invariant: failing means a bug in redhare, not bad input.
#define RH_CHECK(cond, ...)                                                        \
  do {                                                                             \
    if (!(cond)) [[unlikely]]                                                      \
      ::redhare::detail::invariant_failed(#cond, __FILE__, __LINE__,               \
                                          ::redhare::detail::concat(__VA_ARGS__)); \
  } while (0)
