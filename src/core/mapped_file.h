// A read-only memory-mapped file. Checkpoint tensors point straight into the mapping (zero copy);
// the mapping lives as long as any shared_ptr to it does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace redhare {

class MappedFile {
 public:
  // Maps the whole file; throws redhare::Error naming the path if it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (small) file into a string; throws redhare::Error naming the path on failure.
std::string read_text_file(const std::string& path, size_t max_bytes = 256u << 20);

}  // namespace redhare
