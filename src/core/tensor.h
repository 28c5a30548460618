// Tensor: a typed, shaped view of memory on some device.
//
// A Tensor does not own its bytes directly: `owner` keeps alive whatever does (a host buffer, a
// memory-mapped checkpoint file, a device allocation), so views and zero-copy checkpoint tensors
// are cheap to pass around. Strides are in elements; block-quantized tensors are contiguous in
// their last dimension, whose size must be a whole number of blocks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace redhare {

enum class DeviceType : uint8_t { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;
  bool operator==(const Device&) const = default;
  std::string str() const;
};

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // A view of `data` kept alive by `owner`, contiguous strides.
  Tensor(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner,
         Device device = Device{});

  // A new zero-filled contiguous host tensor.
  static Tensor empty(DType dtype, Shape shape);
  static Tensor zeros(DType dtype, Shape shape) { return empty(dtype, std::move(shape)); }
  static Tensor from_f32(const std::vector<float>& v, Shape shape);

  bool defined() const { return data_ != nullptr || numel() == 0; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t size(int dim) const;
  int dim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const;
  int64_t nbytes() const { return dtype_bytes(dtype_, numel()); }
  bool is_contiguous() const;
  Device device() const { return device_; }
  const std::shared_ptr<void>& owner() const { return owner_; }

  void* data() { return data_; }
  const void* data() const { return data_; }
  template <typename T>
  T* data_as() {
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* data_as() const {
    return static_cast<const T*>(data_);
  }

  // Rows [begin, end) of dimension 0, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Same bytes, new contiguous shape with the same element count.
  Tensor reshape(Shape shape) const;
  // A contiguous host copy converted to f32 (plain float types only).
  std::vector<float> to_f32_vector() const;
  std::string str() const;  // "bf16[4096, 128]"

 private:
  DType dtype_ = DType::kF32;
  Shape shape_;
  Shape strides_;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
  Device device_;
};

}  // namespace redhare
