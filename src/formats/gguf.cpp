#include "formats/gguf.h"

#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/mapped_file.h"

namespace redhare {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian u32
// ggml tensors have at most four dimensions.
constexpr uint32_t kMaxDims = 4;
// Nested arrays recurse; a bound keeps a crafted file from exhausting the stack.
constexpr int kMaxArrayDepth = 8;
// Smallest encodings, used to reject counts the remaining bytes cannot possibly hold before
// anything is reserved: a key/value pair is a length, a type and at least one byte of value; a
// tensor entry is a name length, a dim count, a type and an offset.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;

// Ids follow ggml's enum; ids 4 and 5 were removed types and stay unknown.
constexpr GgufTypeInfo kTypes[] = {
    {0, "F32", 1, 4, DType::kF32},          {1, "F16", 1, 2, DType::kF16},
    {2, "Q4_0", 32, 18, DType::kQ4_0},      {3, "Q4_1", 32, 20, DType::kQ4_1},
    {6, "Q5_0", 32, 22, DType::kQ5_0},      {7, "Q5_1", 32, 24, DType::kQ5_1},
    {8, "Q8_0", 32, 34, DType::kQ8_0},      {9, "Q8_1", 32, 36, std::nullopt},
    {10, "Q2_K", 256, 84, std::nullopt},    {11, "Q3_K", 256, 110, std::nullopt},
    {12, "Q4_K", 256, 144, DType::kQ4_K},   {13, "Q5_K", 256, 176, DType::kQ5_K},
    {14, "Q6_K", 256, 210, DType::kQ6_K},   {15, "Q8_K", 256, 292, std::nullopt},
    {16, "IQ2_XXS", 256, 66, std::nullopt}, {17, "IQ2_XS", 256, 74, std::nullopt},
    {18, "IQ3_XXS", 256, 98, std::nullopt}, {19, "IQ1_S", 256, 50, std::nullopt},
    {20, "IQ4_NL", 32, 18, std::nullopt},   {21, "IQ3_S", 256, 110, std::nullopt},
    {22, "IQ2_S", 256, 82, std::nullopt},   {23, "IQ4_XS", 256, 136, std::nullopt},
    {24, "I8", 1, 1, DType::kI8},           {25, "I16", 1, 2, std::nullopt},
    {26, "I32", 1, 4, DType::kI32},         {27, "I64", 1, 8, DType::kI64},
    {28, "F64", 1, 8, std::nullopt},        {29, "IQ1_M", 256, 56, std::nullopt},
    {30, "BF16", 1, 2, DType::kBF16},       {34, "TQ1_0", 256, 54, std::nullopt},
    {35, "TQ2_0", 256, 66, std::nullopt},   {39, "MXFP4", 32, 17, std::nullopt},
    {40, "NVFP4", 64, 36, std::nullopt},    {41, "Q1_0", 128, 18, std::nullopt},
};

// Bytes of one fixed-size value, 0 for strings and arrays.
uint64_t fixed_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
      return 8;
    default:
      return 0;
  }
}

bool valid_value_type(uint32_t t) {
  return t <= static_cast<uint32_t>(GgufValueType::kF64);
}

uint64_t load_le(const uint8_t* p, uint64_t n) {
  uint64_t v = 0;
  for (uint64_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

bool is_signed(GgufValueType t) {
  return t == GgufValueType::kI8 || t == GgufValueType::kI16 || t == GgufValueType::kI32 ||
         t == GgufValueType::kI64;
}

// Sign-extends the stored bits of a signed integer type.
int64_t signed_value(GgufValueType t, uint64_t bits) {
  switch (t) {
    case GgufValueType::kI8:
      return static_cast<int8_t>(bits);
    case GgufValueType::kI16:
      return static_cast<int16_t>(bits);
    case GgufValueType::kI32:
      return static_cast<int32_t>(bits);
    default:
      return static_cast<int64_t>(bits);
  }
}

std::string quoted(std::string_view s, size_t max_len = 60) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < max_len; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > max_len) out += "...";
  return out + "'";
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType t) {
  static constexpr std::string_view kNames[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                "i32", "f32", "bool", "string", "array",
                                                "u64", "i64", "f64"};
  auto i = static_cast<uint32_t>(t);
  return i < std::size(kNames) ? kNames[i] : std::string_view("unknown");
}

const GgufTypeInfo* gguf_type_info(uint32_t ggml_type) {
  for (const GgufTypeInfo& t : kTypes)
    if (t.id == ggml_type) return &t;
  return nullptr;
}

// ---- GgufValue ----

bool GgufValue::is_integer() const {
  switch (type_) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kU16:
    case GgufValueType::kI16:
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kU64:
    case GgufValueType::kI64:
      return true;
    default:
      return false;
  }
}

namespace {
[[noreturn]] void wrong_type(std::string_view what, const GgufValue& v, std::string_view expected) {
  fail(what, " is ", v.summary(), ", expected ", expected);
}
}  // namespace

int64_t GgufValue::as_i64(std::string_view what) const {
  if (!is_integer()) wrong_type(what, *this, "an integer");
  if (is_signed(type_)) return signed_value(type_, bits_);
  if (bits_ > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    fail(what, " = ", bits_, " does not fit in i64");
  return static_cast<int64_t>(bits_);
}

uint64_t GgufValue::as_u64(std::string_view what) const {
  if (!is_integer()) wrong_type(what, *this, "an integer");
  if (is_signed(type_)) {
    int64_t v = signed_value(type_, bits_);
    if (v < 0) fail(what, " = ", v, " is negative, expected an unsigned integer");
    return static_cast<uint64_t>(v);
  }
  return bits_;
}

uint32_t GgufValue::as_u32(std::string_view what) const {
  uint64_t v = as_u64(what);
  if (v > std::numeric_limits<uint32_t>::max()) fail(what, " = ", v, " does not fit in u32");
  return static_cast<uint32_t>(v);
}

int32_t GgufValue::as_i32(std::string_view what) const {
  int64_t v = as_i64(what);
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
    fail(what, " = ", v, " does not fit in i32");
  return static_cast<int32_t>(v);
}

double GgufValue::as_f64(std::string_view what) const {
  if (type_ == GgufValueType::kF32) return f32_from_bits(static_cast<uint32_t>(bits_));
  if (type_ == GgufValueType::kF64) {
    double d;
    std::memcpy(&d, &bits_, 8);
    return d;
  }
  wrong_type(what, *this, "a float");
}

float GgufValue::as_f32(std::string_view what) const {
  return static_cast<float>(as_f64(what));
}

bool GgufValue::as_bool(std::string_view what) const {
  if (type_ != GgufValueType::kBool) wrong_type(what, *this, "a bool");
  return bits_ != 0;
}

std::string_view GgufValue::as_string(std::string_view what) const {
  if (type_ != GgufValueType::kString) wrong_type(what, *this, "a string");
  return str_;
}

GgufValue GgufValue::at(uint64_t i) const {
  RH_CHECK(is_array() && i < count_, "element ", i, " of ", summary());
  if (elem_type_ == GgufValueType::kString) {
    GgufValue v;
    v.type_ = GgufValueType::kString;
    v.str_ = strings_[i];
    return v;
  }
  if (elem_type_ == GgufValueType::kArray) return values_[i];
  GgufValue v;
  v.type_ = elem_type_;
  uint64_t n = fixed_size(elem_type_);
  v.bits_ = load_le(raw_ + i * n, n);
  return v;
}

namespace {
template <typename T, typename Convert>
std::vector<T> convert_array(const GgufValue& v, std::string_view what, std::string_view expected,
                             Convert convert) {
  if (!v.is_array()) wrong_type(what, v, expected);
  std::vector<T> out;
  out.reserve(v.size());
  for (uint64_t i = 0; i < v.size(); ++i) {
    GgufValue e = v.at(i);
    if (e.is_array() || e.type() == GgufValueType::kString) wrong_type(what, v, expected);
    out.push_back(convert(e, what));
  }
  return out;
}
}  // namespace

std::vector<std::string_view> GgufValue::as_strings(std::string_view what) const {
  if (!is_array() || elem_type_ != GgufValueType::kString) wrong_type(what, *this, "array<string>");
  return strings_;
}

std::vector<float> GgufValue::as_f32s(std::string_view what) const {
  if (is_array() && elem_type_ != GgufValueType::kF32 && elem_type_ != GgufValueType::kF64)
    wrong_type(what, *this, "an array of floats");
  return convert_array<float>(*this, what, "an array of floats",
                              [](const GgufValue& e, std::string_view w) { return e.as_f32(w); });
}

std::vector<int32_t> GgufValue::as_i32s(std::string_view what) const {
  return convert_array<int32_t>(*this, what, "an array of integers",
                                [](const GgufValue& e, std::string_view w) { return e.as_i32(w); });
}

std::vector<uint32_t> GgufValue::as_u32s(std::string_view what) const {
  return convert_array<uint32_t>(
      *this, what, "an array of integers",
      [](const GgufValue& e, std::string_view w) { return e.as_u32(w); });
}

std::vector<int64_t> GgufValue::as_i64s(std::string_view what) const {
  return convert_array<int64_t>(*this, what, "an array of integers",
                                [](const GgufValue& e, std::string_view w) { return e.as_i64(w); });
}

std::vector<uint64_t> GgufValue::as_u64s(std::string_view what) const {
  return convert_array<uint64_t>(
      *this, what, "an array of integers",
      [](const GgufValue& e, std::string_view w) { return e.as_u64(w); });
}

std::string GgufValue::summary() const {
  std::string out(gguf_value_type_name(type_));
  if (type_ == GgufValueType::kArray)
    return "array<" + std::string(gguf_value_type_name(elem_type_)) + ">[" +
           std::to_string(count_) + "]";
  if (type_ == GgufValueType::kString) return out + " " + quoted(str_);
  if (type_ == GgufValueType::kBool) return out + (bits_ ? " true" : " false");
  if (is_float()) return out + " " + std::to_string(as_f64());
  if (is_signed(type_)) return out + " " + std::to_string(signed_value(type_, bits_));
  return out + " " + std::to_string(bits_);
}

// ---- parsing ----

class GgufParser {
 public:
  GgufParser(GgufFile& f) : f_(f), p_(f.data_), size_(f.size_) {}

  void run() {
    if (size_ < 4 || load_le(p_, 4) != kGgufMagic) error("not a GGUF file (bad magic)");
    pos_ = 4;
    uint32_t version = u32("the version");
    if (version == 0x02000000 || version == 0x03000000)
      error("big-endian GGUF files are not supported");
    if (version != 2 && version != 3)
      error("unsupported GGUF version ", version, " (redhare reads versions 2 and 3)");
    f_.version_ = version;
    uint64_t n_tensors = u64("the tensor count");
    uint64_t n_kv = u64("the metadata count");
    if (n_kv > remaining() / kMinKvBytes)
      error("metadata count ", n_kv, " is more than the file can hold");
    if (n_tensors > remaining() / kMinTensorInfoBytes)
      error("tensor count ", n_tensors, " is more than the file can hold");

    f_.kv_.reserve(n_kv);
    for (uint64_t i = 0; i < n_kv; ++i) read_kv(i);
    read_alignment();
    f_.tensors_.reserve(n_tensors);
    for (uint64_t i = 0; i < n_tensors; ++i) read_tensor_info(i);

    uint64_t a = f_.alignment_;
    f_.data_offset_ = (pos_ + a - 1) / a * a;  // pos_ <= size_ and a <= 2^31: no overflow
    for (const GgufTensorInfo& t : f_.tensors_) check_tensor_bounds(t);
  }

 private:
  template <typename... Args>
  [[noreturn]] void error(Args&&... args) {
    fail(f_.name_, ": ", std::forward<Args>(args)...);
  }

  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, std::string_view what) {
    if (n > remaining())
      error("truncated at byte ", pos_, " reading ", what, " (", n, " bytes needed, ", remaining(),
            " left)");
  }
  uint32_t u32(std::string_view what) {
    need(4, what);
    auto v = static_cast<uint32_t>(load_le(p_ + pos_, 4));
    pos_ += 4;
    return v;
  }
  uint64_t u64(std::string_view what) {
    need(8, what);
    uint64_t v = load_le(p_ + pos_, 8);
    pos_ += 8;
    return v;
  }
  std::string_view str(std::string_view what) {
    uint64_t n = u64(what);
    if (n > remaining())
      error("string length ", n, " of ", what, " at byte ", pos_ - 8,
            " runs past the end of the file");
    std::string_view s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }

  void read_kv(uint64_t index) {
    std::string what = "the key of metadata entry " + std::to_string(index);
    std::string_view key = str(what);
    std::string key_what = "metadata key " + quoted(key);
    uint32_t type = u32(key_what);
    GgufValue v = value(type, key_what, 0);
    auto [it, inserted] = f_.kv_index_.emplace(std::string(key), f_.kv_.size());
    if (!inserted) error("duplicate ", key_what);
    f_.kv_.emplace_back(std::string(key), std::move(v));
  }

  GgufValue value(uint32_t type, const std::string& what, int depth) {
    if (!valid_value_type(type)) error(what, " has unknown value type ", type);
    GgufValue v;
    v.type_ = static_cast<GgufValueType>(type);
    if (v.type_ == GgufValueType::kString) {
      v.str_ = str(what);
    } else if (v.type_ == GgufValueType::kArray) {
      if (depth >= kMaxArrayDepth) error(what, " nests arrays more than ", kMaxArrayDepth, " deep");
      uint32_t elem = u32(what);
      if (!valid_value_type(elem)) error(what, " is an array of unknown value type ", elem);
      v.elem_type_ = static_cast<GgufValueType>(elem);
      v.count_ = u64(what);
      // Each element takes at least this many bytes in the file, which bounds the count before
      // anything is reserved for it.
      uint64_t min_bytes = fixed_size(v.elem_type_);
      if (v.elem_type_ == GgufValueType::kString) min_bytes = 8;
      if (v.elem_type_ == GgufValueType::kArray) min_bytes = 12;
      if (v.count_ > remaining() / min_bytes)
        error(what, ": array of ", v.count_, " ", gguf_value_type_name(v.elem_type_),
              " elements at byte ", pos_ - 8, " runs past the end of the file");
      if (v.elem_type_ == GgufValueType::kString) {
        v.strings_.reserve(v.count_);
        for (uint64_t i = 0; i < v.count_; ++i) v.strings_.push_back(str(what));
      } else if (v.elem_type_ == GgufValueType::kArray) {
        v.values_.reserve(v.count_);
        for (uint64_t i = 0; i < v.count_; ++i)
          v.values_.push_back(value(static_cast<uint32_t>(GgufValueType::kArray), what, depth + 1));
      } else {
        v.raw_ = p_ + pos_;
        pos_ += v.count_ * min_bytes;
      }
    } else {
      uint64_t n = fixed_size(v.type_);
      need(n, what);
      v.bits_ = load_le(p_ + pos_, n);
      pos_ += n;
    }
    return v;
  }

  void read_alignment() {
    const GgufValue* a = f_.find("general.alignment");
    if (!a) return;
    bool negative = is_signed(a->type_) && signed_value(a->type_, a->bits_) < 0;
    uint64_t v = a->is_integer() && !negative ? a->as_u64() : 0;
    if (v == 0 || v > (1ull << 31) || (v & (v - 1)) != 0)
      error("general.alignment is ", a->summary(), ", expected a power of two up to 2^31");
    f_.alignment_ = v;
  }

  void read_tensor_info(uint64_t index) {
    GgufTensorInfo t;
    t.name = std::string(str("the name of tensor " + std::to_string(index)));
    std::string what = "tensor " + quoted(t.name);
    uint32_t n_dims = u32(what);
    if (n_dims > kMaxDims) error(what, " has ", n_dims, " dimensions, more than ", kMaxDims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = u64(what);
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(numel, static_cast<int64_t>(ne), &numel))
        error(what, " has an impossible shape (element count overflows)");
      t.ne.push_back(ne);
    }
    t.shape.assign(t.ne.rbegin(), t.ne.rend());
    t.numel = numel;
    t.ggml_type = u32(what);
    t.offset = u64(what);
    t.type = gguf_type_info(t.ggml_type);
    if (t.type) {
      if (!t.ne.empty() && t.ne[0] % static_cast<uint64_t>(t.type->block_elems) != 0)
        error(what, " of type ", t.type->name, " has a row of ", t.ne[0],
              " elements, not a whole number of ", t.type->block_elems, "-element blocks");
      if (t.ne.empty() && t.type->block_elems != 1)
        error(what, " of block type ", t.type->name, " has no dimensions");
      uint64_t blocks = static_cast<uint64_t>(numel / t.type->block_elems);
      if (__builtin_mul_overflow(blocks, static_cast<uint64_t>(t.type->block_bytes), &t.nbytes) ||
          t.nbytes > size_)
        error(what, " with ", numel, " elements of ", t.type->name,
              " needs more bytes than the whole file holds");
    }
    if (t.offset % f_.alignment_ != 0)
      error(what, " has offset ", t.offset, ", not a multiple of the alignment ", f_.alignment_);
    if (!f_.tensor_index_.emplace(t.name, f_.tensors_.size()).second)
      error("duplicate tensor name ", quoted(t.name));
    f_.tensors_.push_back(std::move(t));
  }

  void check_tensor_bounds(const GgufTensorInfo& t) {
    uint64_t data_size = f_.data_offset_ <= size_ ? size_ - f_.data_offset_ : 0;
    if (f_.data_offset_ > size_ || t.offset > data_size || t.nbytes > data_size - t.offset)
      error("tensor ", quoted(t.name), " at data offset ", t.offset, " with ", t.nbytes,
            " bytes runs past the end of the file (data section holds ", data_size, " bytes)");
  }

  GgufFile& f_;
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

GgufFile GgufFile::parse(const uint8_t* data, size_t size, std::string name,
                         std::shared_ptr<void> owner) {
  GgufFile f;
  f.name_ = std::move(name);
  f.owner_ = std::move(owner);
  f.data_ = data;
  f.size_ = size;
  GgufParser(f).run();
  return f;
}

GgufFile GgufFile::open(const std::string& path) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  const uint8_t* data = file->data();
  size_t size = file->size();
  return parse(data, size, path, std::move(file));
}

// ---- metadata access ----

std::string GgufFile::where(std::string_view key) const {
  return name_ + ": metadata key " + quoted(key, 200);
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufValue& GgufFile::at(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) fail(name_, ": metadata key ", quoted(key, 200), " is missing");
  return *v;
}

uint32_t GgufFile::get_u32(std::string_view key) const {
  return at(key).as_u32(where(key));
}
int32_t GgufFile::get_i32(std::string_view key) const {
  return at(key).as_i32(where(key));
}
uint64_t GgufFile::get_u64(std::string_view key) const {
  return at(key).as_u64(where(key));
}
int64_t GgufFile::get_i64(std::string_view key) const {
  return at(key).as_i64(where(key));
}
float GgufFile::get_f32(std::string_view key) const {
  return at(key).as_f32(where(key));
}
double GgufFile::get_f64(std::string_view key) const {
  return at(key).as_f64(where(key));
}
bool GgufFile::get_bool(std::string_view key) const {
  return at(key).as_bool(where(key));
}
std::string GgufFile::get_string(std::string_view key) const {
  return std::string(at(key).as_string(where(key)));
}

uint32_t GgufFile::get_u32(std::string_view key, uint32_t fallback) const {
  const GgufValue* v = find(key);
  return v ? v->as_u32(where(key)) : fallback;
}
int64_t GgufFile::get_i64(std::string_view key, int64_t fallback) const {
  const GgufValue* v = find(key);
  return v ? v->as_i64(where(key)) : fallback;
}
float GgufFile::get_f32(std::string_view key, float fallback) const {
  const GgufValue* v = find(key);
  return v ? v->as_f32(where(key)) : fallback;
}
bool GgufFile::get_bool(std::string_view key, bool fallback) const {
  const GgufValue* v = find(key);
  return v ? v->as_bool(where(key)) : fallback;
}
std::string GgufFile::get_string(std::string_view key, std::string_view fallback) const {
  const GgufValue* v = find(key);
  return std::string(v ? v->as_string(where(key)) : fallback);
}

std::vector<std::string_view> GgufFile::get_array_of_strings(std::string_view key) const {
  return at(key).as_strings(where(key));
}
std::vector<float> GgufFile::get_array_of_f32(std::string_view key) const {
  return at(key).as_f32s(where(key));
}
std::vector<int32_t> GgufFile::get_array_of_i32(std::string_view key) const {
  return at(key).as_i32s(where(key));
}
std::vector<uint32_t> GgufFile::get_array_of_u32(std::string_view key) const {
  return at(key).as_u32s(where(key));
}
std::vector<int64_t> GgufFile::get_array_of_i64(std::string_view key) const {
  return at(key).as_i64s(where(key));
}

// ---- tensors ----

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Tensor GgufFile::tensor(std::string_view name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) fail(name_, ": no tensor named ", quoted(name, 200));
  return tensor(*t);
}

Tensor GgufFile::tensor(const GgufTensorInfo& info) const {
  if (!info.type)
    fail(name_, ": tensor ", quoted(info.name), " has unknown ggml type id ", info.ggml_type);
  if (!info.type->dtype)
    fail(name_, ": tensor ", quoted(info.name), " has ggml type ", info.type->name, " (",
         info.ggml_type, "), which redhare does not support");
  auto* p = const_cast<uint8_t*>(data_ + data_offset_ + info.offset);
  return Tensor(*info.type->dtype, info.shape, p, owner_);
}

std::vector<std::pair<std::string, Tensor>> GgufFile::tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(tensors_.size());
  for (const GgufTensorInfo& t : tensors_) out.emplace_back(t.name, tensor(t));
  return out;
}

}  // namespace redhare
