// safetensors checkpoints: header parsing (untrusted input), zero-copy tensor views, writing.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON describing each tensor's dtype,
// shape and [begin, end) byte range relative to the data section that follows, then the data.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace redhare {

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0;  // relative to the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // absolute offset of the data section in the file
};

// Validates everything a reader relies on: header length within the file, JSON object, known
// dtypes, non-negative shapes whose byte size matches the offsets, offsets inside the data section,
// no two tensors overlapping. Throws redhare::Error("<file_name>: <problem>").
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                           const std::string& file_name);

class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  const SafetensorsHeader& header() const { return header_; }
  const std::string& path() const { return file_->path(); }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // A zero-copy view into the mapping; throws if absent.
  Tensor tensor(const std::string& name) const;

 private:
  std::shared_ptr<MappedFile> file_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

// Writes tensors (host, contiguous) to a safetensors file, in the given order.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// A checkpoint directory: model.safetensors, or shards listed by model.safetensors.index.json.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& dir);
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  Tensor get(const std::string& name) const;  // throws naming the tensor and directory
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }
  int num_files() const { return static_cast<int>(files_.size()); }

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> file index
};

}  // namespace redhare
