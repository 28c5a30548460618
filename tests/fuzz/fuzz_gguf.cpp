// libFuzzer target for the GGUF parser: header, metadata, tensor table and tensor views.
//
// Every input must either parse or end in redhare::Error. After a parse the target reads every
// metadata value and the first and last byte of every tensor, so that a bounds check the parser
// missed shows up as an AddressSanitizer report on libFuzzer's exactly-sized input buffer.
//
// Seed corpus: fixtures/gguf/*.gguf. Run: fuzz_gguf -max_total_time=30 corpus_dir
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "formats/gguf.h"

namespace {

volatile uint8_t g_sink;

void touch(const redhare::GgufValue& v, int depth) {
  (void)v.summary();
  if (v.is_integer()) {
    try {
      (void)v.as_i64();
    } catch (const redhare::Error&) {
    }
  }
  if (v.is_float()) (void)v.as_f64();
  if (v.type() == redhare::GgufValueType::kString) {
    std::string_view s = v.as_string();
    if (!s.empty()) g_sink = static_cast<uint8_t>(s.front() ^ s.back());
  }
  if (v.is_array() && depth < 4) {
    const uint64_t n = v.size();
    // First and last elements are enough to catch a wrong bound; all of them would be slow.
    if (n > 0) {
      touch(v.at(0), depth + 1);
      touch(v.at(n - 1), depth + 1);
    }
    try {
      if (v.element_type() == redhare::GgufValueType::kString)
        (void)v.as_strings();
      else if (v.element_type() == redhare::GgufValueType::kF32)
        (void)v.as_f32s();
      else if (v.element_type() != redhare::GgufValueType::kArray)
        (void)v.as_i64s();
    } catch (const redhare::Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    redhare::GgufFile f = redhare::GgufFile::parse(data, size, "fuzz.gguf");
    for (const auto& kv : f.metadata()) touch(kv.second, 0);
    (void)f.get_u32("general.alignment", 32u);
    for (const redhare::GgufTensorInfo& t : f.tensor_infos()) {
      try {
        redhare::Tensor x = f.tensor(t);
        const int64_t n = x.nbytes();
        if (n > 0) {
          const auto* p = static_cast<const uint8_t*>(x.data());
          g_sink = static_cast<uint8_t>(p[0] ^ p[n - 1]);
        }
      } catch (const redhare::Error&) {
      }
    }
  } catch (const redhare::Error&) {
  }
  return 0;
}
