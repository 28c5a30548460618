#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/error.h"

namespace redhare {

std::string Device::str() const {
  return type == DeviceType::kCPU ? std::string("cpu") : "cuda:" + std::to_string(index);
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

namespace {
Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}
}  // namespace

Tensor::Tensor(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner, Device device)
    : dtype_(dtype),
      shape_(std::move(shape)),
      strides_(contiguous_strides(shape_)),
      data_(data),
      owner_(std::move(owner)),
      device_(device) {
  for (int64_t d : shape_) RH_CHECK(d >= 0, "negative dimension in ", shape_str(shape_));
}

Tensor Tensor::empty(DType dtype, Shape shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  int64_t bytes = dtype_bytes(dtype, n);
  // 64-byte alignment so vector loads never split a cache line at a row start.
  size_t alloc = static_cast<size_t>((bytes + 63) / 64 * 64);
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) fail("out of host memory allocating ", alloc, " bytes for ", dtype_name(dtype),
               shape_str(shape));
  std::memset(p, 0, alloc);
  std::shared_ptr<void> owner(p, [](void* q) { std::free(q); });
  return Tensor(dtype, std::move(shape), p, std::move(owner));
}

Tensor Tensor::from_f32(const std::vector<float>& v, Shape shape) {
  Tensor t = empty(DType::kF32, std::move(shape));
  RH_CHECK(t.numel() == static_cast<int64_t>(v.size()), "size mismatch");
  std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

int64_t Tensor::size(int d) const {
  if (d < 0) d += dim();
  RH_CHECK(d >= 0 && d < dim(), "dimension ", d, " out of range for ", str());
  return shape_[static_cast<size_t>(d)];
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  RH_CHECK(dim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "bad row slice [", begin,
           ", ", end, ") of ", str());
  RH_CHECK(is_contiguous(), "slice_rows needs a contiguous tensor");
  Tensor t = *this;
  int64_t row_elems = dim() == 1 ? 1 : strides_[0];
  t.shape_[0] = end - begin;
  t.data_ = static_cast<uint8_t*>(data_) + dtype_bytes(dtype_, begin * row_elems);
  return t;
}

Tensor Tensor::reshape(Shape shape) const {
  RH_CHECK(is_contiguous(), "reshape needs a contiguous tensor");
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.strides_ = contiguous_strides(t.shape_);
  RH_CHECK(t.numel() == numel(), "reshape of ", str(), " to ", shape_str(t.shape_));
  return t;
}

std::vector<float> Tensor::to_f32_vector() const {
  RH_CHECK(device_.type == DeviceType::kCPU, "to_f32_vector on ", device_.str());
  RH_CHECK(is_contiguous(), "to_f32_vector needs a contiguous tensor");
  std::vector<float> out(static_cast<size_t>(numel()));
  convert_to_f32(dtype_, data_, out.data(), numel());
  return out;
}

std::string Tensor::str() const { return std::string(dtype_name(dtype_)) + shape_str(shape_); }

}  // namespace redhare
