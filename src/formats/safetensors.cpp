#include "formats/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace redhare {
namespace {

using json = nlohmann::json;

// A header larger than this is not a real checkpoint; refusing it bounds parse time and memory.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

SafetensorsEntry parse_entry(const std::string& file, const std::string& name, const json& j,
                             uint64_t data_size) {
  auto bad = [&](const std::string& what) -> SafetensorsEntry {
    fail(file, ": tensor '", name, "': ", what);
  };
  if (!j.is_object()) return bad("entry is not a JSON object");
  SafetensorsEntry e;
  e.name = name;
  auto dt = j.find("dtype");
  if (dt == j.end() || !dt->is_string()) return bad("missing or non-string 'dtype'");
  if (!dtype_from_safetensors(dt->get_ref<const std::string&>(), &e.dtype))
    return bad("unsupported dtype '" + dt->get<std::string>() + "'");
  auto sh = j.find("shape");
  if (sh == j.end() || !sh->is_array()) return bad("missing or non-array 'shape'");
  if (sh->size() > 8) return bad("shape has more than 8 dimensions");
  uint64_t numel = 1;
  for (const json& d : *sh) {
    if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
      return bad("shape holds something other than a non-negative integer");
    uint64_t v = d.get<uint64_t>();
    if (v > (1ull << 40) || mul_overflows(numel, v, &numel)) return bad("shape is impossibly large");
    e.shape.push_back(static_cast<int64_t>(v));
  }
  auto off = j.find("data_offsets");
  if (off == j.end() || !off->is_array() || off->size() != 2)
    return bad("missing 'data_offsets' [begin, end]");
  for (const json& o : *off)
    if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0))
      return bad("data_offsets holds something other than a non-negative integer");
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.begin > e.end) return bad("data_offsets begin is after end");
  if (e.end > data_size)
    return bad("data_offsets end " + std::to_string(e.end) + " is past the data section (" +
               std::to_string(data_size) + " bytes; file truncated?)");
  uint64_t want;
  if (mul_overflows(numel, static_cast<uint64_t>(dtype_info(e.dtype).block_bytes), &want))
    return bad("shape is impossibly large");
  if (want != e.end - e.begin)
    return bad("shape " + shape_str(e.shape) + " of " + std::string(dtype_name(e.dtype)) +
               " needs " + std::to_string(want) + " bytes but data_offsets span " +
               std::to_string(e.end - e.begin));
  return e;
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                           const std::string& file_name) {
  if (size < 8) fail(file_name, ": not a safetensors file: only ", size, " bytes");
  uint64_t n = read_u64_le(data);
  if (n > kMaxHeaderBytes) fail(file_name, ": header length ", n, " is implausibly large");
  if (n > size - 8)
    fail(file_name, ": header length ", n, " is past the end of the file (", size,
         " bytes; truncated?)");
  json j = json::parse(data + 8, data + 8 + n, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(file_name, ": header is not valid JSON");
  if (!j.is_object()) fail(file_name, ": header is not a JSON object");
  SafetensorsHeader h;
  h.data_start = 8 + n;
  uint64_t data_size = size - h.data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) fail(file_name, ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) fail(file_name, ": __metadata__ value '", m.key(), "' is not a string");
        h.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    h.tensors.push_back(parse_entry(file_name, it.key(), *it, data_size));
  }
  std::sort(h.tensors.begin(), h.tensors.end(),
            [](const auto& a, const auto& b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
  for (size_t i = 1; i < h.tensors.size(); ++i) {
    const auto& a = h.tensors[i - 1];
    const auto& b = h.tensors[i];
    if (b.begin < a.end)
      fail(file_name, ": tensors '", a.name, "' and '", b.name, "' overlap in the data section");
  }
  return h;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto f = std::make_shared<SafetensorsFile>();
  f->file_ = MappedFile::open(path);
  f->header_ = parse_safetensors_header(f->file_->data(), f->file_->size(), path);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_[f->header_.tensors[i].name] = i;
  return f;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(file_->path(), ": no tensor named '", name, "'");
  const SafetensorsEntry& e = header_.tensors[it->second];
  auto* p = const_cast<uint8_t*>(file_->data() + header_.data_start + e.begin);
  // The tensor keeps the mapping alive through the aliasing owner.
  return Tensor(e.dtype, e.shape, p, std::shared_ptr<void>(file_, p));
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  static const std::map<DType, std::string> kNames = {
      {DType::kF32, "F32"},     {DType::kF16, "F16"},         {DType::kBF16, "BF16"},
      {DType::kF8E4M3, "F8_E4M3"}, {DType::kF8E5M2, "F8_E5M2"}, {DType::kI8, "I8"},
      {DType::kI32, "I32"},     {DType::kI64, "I64"},         {DType::kU8, "U8"},
      {DType::kBool, "BOOL"}};
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    auto it = kNames.find(t.dtype());
    if (it == kNames.end()) fail("cannot save ", t.str(), " '", name, "' to safetensors");
    RH_CHECK(t.is_contiguous(), "save_safetensors needs contiguous tensors");
    uint64_t n = static_cast<uint64_t>(t.nbytes());
    h[name] = {{"dtype", it->second}, {"shape", t.shape()}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string hs = h.dump();
  while ((hs.size() + 8) % 8 != 0) hs.push_back(' ');  // keep the data section 8-byte aligned
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail(path, ": cannot create: ", std::strerror(errno));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(hs.size() >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(hs.data(), 1, hs.size(), f) == hs.size();
  for (const auto& [name, t] : tensors)
    ok = ok && std::fwrite(t.data(), 1, static_cast<size_t>(t.nbytes()), f) ==
                   static_cast<size_t>(t.nbytes());
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) fail(path, ": write failed");
}

Checkpoint Checkpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint c;
  c.dir_ = dir;
  fs::path index = fs::path(dir) / "model.safetensors.index.json";
  fs::path single = fs::path(dir) / "model.safetensors";
  std::vector<std::string> shard_names;
  std::map<std::string, std::string> weight_map;
  if (fs::exists(index)) {
    json j = json::parse(read_text_file(index.string()), nullptr, false);
    if (j.is_discarded() || !j.is_object()) fail(index.string(), ": not a JSON object");
    auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object()) fail(index.string(), ": missing 'weight_map' object");
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it->is_string()) fail(index.string(), ": weight_map entry '", it.key(), "' is not a file name");
      std::string shard = it->get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..")
        fail(index.string(), ": shard name '", shard, "' must be a plain file name");
      weight_map[it.key()] = shard;
      if (std::find(shard_names.begin(), shard_names.end(), shard) == shard_names.end())
        shard_names.push_back(shard);
    }
  } else if (fs::exists(single)) {
    shard_names.push_back("model.safetensors");
  } else {
    fail(dir, ": no model.safetensors or model.safetensors.index.json");
  }
  for (const std::string& shard : shard_names) {
    auto f = SafetensorsFile::open((fs::path(dir) / shard).string());
    size_t idx = c.files_.size();
    for (const auto& e : f->header().tensors) {
      if (c.where_.count(e.name))
        fail(dir, ": tensor '", e.name, "' appears in more than one shard");
      c.where_[e.name] = idx;
    }
    c.files_.push_back(std::move(f));
  }
  for (const auto& [name, shard] : weight_map) {
    auto it = c.where_.find(name);
    if (it == c.where_.end())
      fail(index.string(), ": tensor '", name, "' is listed in shard '", shard, "' but not found there");
  }
  return c;
}

Tensor Checkpoint::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, ": checkpoint has no tensor '", name, "'");
  return files_[it->second]->tensor(name);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [n, i] : where_) out.push_back(n);
  return out;
}

}  // namespace redhare
