// The CPU backend: host memory and the CPU ops (fast, or the reference ones for testing).
#include <cstring>
#include <fstream>
#include <string>

#include "backends/backend.h"
#include "backends/cpu/ops.h"
#include "core/error.h"

namespace redhare {
namespace {

template <bool kRef>
class CpuBackend final : public Backend {
 public:
  std::string name() const override { return kRef ? "cpu-reference" : "cpu"; }
  Device device() const override { return Device{}; }
  Tensor alloc(DType dtype, Shape shape) override { return Tensor::empty(dtype, std::move(shape)); }
  Tensor upload(const Tensor& host) override { return host; }
  Tensor to_host(const Tensor& t) override { return t; }
  int64_t free_memory_bytes() const override {
    std::ifstream in("/proc/meminfo");
    std::string key;
    int64_t kb = 0;
    std::string unit;
    while (in >> key >> kb >> unit)
      if (key == "MemAvailable:") return kb * 1024;
    return 0;
  }

#define RH_OP(name, params, args) \
  void name params override {     \
    if constexpr (kRef)           \
      cpu::ref::name args;        \
    else                          \
      cpu::fast::name args;       \
  }
  RH_OP(embedding, (const Tensor& table, const std::vector<int32_t>& ids, Tensor& out), (table, ids, out))
  RH_OP(rms_norm, (const Tensor& x, const Tensor& w, float eps, Tensor& out), (x, w, eps, out))
  RH_OP(add_rms_norm, (Tensor& r, const Tensor& x, const Tensor& w, float eps, Tensor& out), (r, x, w, eps, out))
  RH_OP(head_rms_norm, (Tensor& x, int64_t off, int64_t nh, const Tensor& w, float eps), (x, off, nh, w, eps))
  RH_OP(linear, (const Tensor& x, const Tensor& w, const Tensor* b, Tensor& out), (x, w, b, out))
  RH_OP(silu_mul, (const Tensor& gu, Tensor& out), (gu, out))
  RH_OP(rope, (Tensor& x, int64_t nh, int64_t hd, const std::vector<int32_t>& pos, const Tensor& f), (x, nh, hd, pos, f))
  RH_OP(add, (Tensor& out, const Tensor& x), (out, x))
  RH_OP(attention, (const Tensor& qkv, KvCacheLayer& c, const AttentionBatch& b, const AttentionParams& p, Tensor& out), (qkv, c, b, p, out))
#undef RH_OP

  void gather_rows(const Tensor& x, const std::vector<int32_t>& rows, Tensor& out) override {
    const int64_t cols = x.size(1);
    RH_CHECK(out.size(0) == static_cast<int64_t>(rows.size()) && out.size(1) == cols, "gather_rows");
    for (size_t i = 0; i < rows.size(); ++i) {
      RH_CHECK(rows[i] >= 0 && rows[i] < x.size(0), "gather_rows: row ", rows[i], " out of range");
      std::memcpy(out.data_as<float>() + static_cast<int64_t>(i) * cols,
                  x.data_as<float>() + rows[i] * cols, static_cast<size_t>(cols) * 4);
    }
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(bool reference) {
  if (reference) return std::make_unique<CpuBackend<true>>();
  return std::make_unique<CpuBackend<false>>();
}

}  // namespace redhare
