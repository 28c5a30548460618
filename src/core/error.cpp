#include "core/error.h"

namespace redhare::detail {

void invariant_failed(const char* cond, const char* file, int line, const std::string& msg) {
  std::string what = concat("internal error: ", cond, " failed at ", file, ":", line);
  if (!msg.empty()) what += ": " + msg;
  throw std::logic_error(what);
}

}  // namespace redhare::detail
