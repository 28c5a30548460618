// GGUF checkpoints (versions 2 and 3, little-endian): metadata and zero-copy tensor views.
//
// A GGUF file is untrusted input. Parsing checks every count, length, shape and offset against
// the bytes actually present before it allocates or reads, so a malformed file ends in a
// redhare::Error naming the file and the problem, never a crash or an allocation larger than a
// small multiple of the file itself.
//
// Layout: "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata key/value pairs,
// the tensor table (name, dims in ggml's ne order, ggml type, offset), padding to
// `general.alignment`, then the tensor data. ne[0] varies fastest, so a tensor with ne = [K, N] is
// exposed as a row-major redhare::Tensor of shape [N, K].
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace redhare {

enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
std::string_view gguf_value_type_name(GgufValueType t);

// One metadata value. Strings and the elements of numeric arrays point into the file's bytes, so
// a value (and every string_view it hands out) is valid only while its GgufFile is alive.
class GgufValue {
 public:
  GgufValueType type() const { return type_; }
  bool is_integer() const;
  bool is_float() const { return type_ == GgufValueType::kF32 || type_ == GgufValueType::kF64; }

  // Scalar conversions. Integers convert to any integer type the value fits in; floats accept
  // f32 and f64. Anything else throws redhare::Error naming `what` (the key, in GgufFile's
  // getters) and the actual type.
  uint64_t as_u64(std::string_view what = "value") const;
  int64_t as_i64(std::string_view what = "value") const;
  uint32_t as_u32(std::string_view what = "value") const;
  int32_t as_i32(std::string_view what = "value") const;
  double as_f64(std::string_view what = "value") const;
  float as_f32(std::string_view what = "value") const;
  bool as_bool(std::string_view what = "value") const;
  std::string_view as_string(std::string_view what = "value") const;

  // Arrays. size() is the element count (0 for scalars); at(i) is element i as a value of its own.
  bool is_array() const { return type_ == GgufValueType::kArray; }
  GgufValueType element_type() const { return elem_type_; }
  uint64_t size() const { return count_; }
  GgufValue at(uint64_t i) const;
  // Typed copies of a whole array; throw naming `what` when the element type does not convert.
  std::vector<std::string_view> as_strings(std::string_view what = "value") const;
  std::vector<float> as_f32s(std::string_view what = "value") const;
  std::vector<int32_t> as_i32s(std::string_view what = "value") const;
  std::vector<uint32_t> as_u32s(std::string_view what = "value") const;
  std::vector<int64_t> as_i64s(std::string_view what = "value") const;
  std::vector<uint64_t> as_u64s(std::string_view what = "value") const;
  // Raw little-endian bytes of a numeric or bool array (count * element size), zero copy.
  const uint8_t* raw_elements() const { return raw_; }

  // A short human-readable rendering ("u32 16", "array<string>[128256]") for `redhare info`.
  std::string summary() const;

 private:
  friend class GgufParser;
  GgufValueType type_ = GgufValueType::kU8;
  GgufValueType elem_type_ = GgufValueType::kU8;  // arrays only
  uint64_t count_ = 0;                            // arrays only
  uint64_t bits_ = 0;                      // scalar numbers: the value's bytes, zero-extended
  std::string_view str_;                   // strings
  const uint8_t* raw_ = nullptr;           // arrays of fixed-size elements
  std::vector<std::string_view> strings_;  // arrays of strings
  std::vector<GgufValue> values_;          // arrays of arrays
};

// A ggml tensor type as stored in the file; `dtype` is empty when redhare cannot compute on it.
struct GgufTypeInfo {
  uint32_t id;
  std::string_view name;  // ggml's name: "Q4_K", "IQ2_XXS", ...
  int block_elems;
  int block_bytes;
  std::optional<DType> dtype;
};
// The ggml type with this id, or nullptr when the id is unknown.
const GgufTypeInfo* gguf_type_info(uint32_t ggml_type);

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;
  std::vector<uint64_t> ne;  // ggml order: ne[0] varies fastest
  Shape shape;               // row-major order: ne reversed
  uint64_t offset = 0;       // from the start of the data section
  uint64_t nbytes = 0;
  int64_t numel = 0;
  const GgufTypeInfo* type = nullptr;  // null for a type id redhare does not know
  bool supported() const { return type != nullptr && type->dtype.has_value(); }
};

class GgufFile {
 public:
  // Maps the file and parses it; the returned tensors point into the mapping.
  static GgufFile open(const std::string& path);
  // Parses `size` bytes at `data`; `name` is used in messages. `owner` keeps the bytes alive for
  // the tensors and values handed out; without one the caller keeps them alive.
  static GgufFile parse(const uint8_t* data, size_t size, std::string name,
                        std::shared_ptr<void> owner = nullptr);

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }

  // ---- metadata ----
  // Key/value pairs in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  // The value of `key`; throws redhare::Error naming the file and key when it is absent.
  const GgufValue& at(std::string_view key) const;

  // Typed getters: throw on a missing key or a value of the wrong type, naming file and key.
  uint32_t get_u32(std::string_view key) const;
  int32_t get_i32(std::string_view key) const;
  uint64_t get_u64(std::string_view key) const;
  int64_t get_i64(std::string_view key) const;
  float get_f32(std::string_view key) const;
  double get_f64(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  // The same with a default for an absent key (a present key of the wrong type still throws).
  uint32_t get_u32(std::string_view key, uint32_t fallback) const;
  int64_t get_i64(std::string_view key, int64_t fallback) const;
  float get_f32(std::string_view key, float fallback) const;
  bool get_bool(std::string_view key, bool fallback) const;
  std::string get_string(std::string_view key, std::string_view fallback) const;

  std::vector<std::string_view> get_array_of_strings(std::string_view key) const;
  std::vector<float> get_array_of_f32(std::string_view key) const;
  std::vector<int32_t> get_array_of_i32(std::string_view key) const;
  std::vector<uint32_t> get_array_of_u32(std::string_view key) const;
  std::vector<int64_t> get_array_of_i64(std::string_view key) const;

  // ---- tensors ----
  const std::vector<GgufTensorInfo>& tensor_infos() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  // A zero-copy view of the tensor, read-only (a mapped file is mapped without write access).
  // Throws naming the file and tensor when the name is absent or its ggml type is one redhare
  // does not support.
  Tensor tensor(std::string_view name) const;
  Tensor tensor(const GgufTensorInfo& info) const;
  // Every tensor, in file order; throws at the first one whose type is unsupported.
  std::vector<std::pair<std::string, Tensor>> tensors() const;

 private:
  friend class GgufParser;
  std::string where(std::string_view key) const;

  std::string name_;
  std::shared_ptr<void> owner_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace redhare
