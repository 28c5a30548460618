// libFuzzer target: the safetensors header parser on arbitrary bytes. Any input must either parse
// into a header whose tensors lie inside the buffer without overlapping, or throw redhare::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    redhare::SafetensorsHeader h = redhare::parse_safetensors_header(data, size, "fuzz");
    uint64_t prev_end = 0;
    for (const auto& t : h.tensors) {
      if (t.begin < prev_end || t.end < t.begin || h.data_start + t.end > size) std::abort();
      prev_end = t.end;
    }
  } catch (const redhare::Error&) {
  }
  return 0;
}
