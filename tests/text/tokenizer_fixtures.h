// Shared helpers for the tokenizer tests: where the fetched tokenizers and recorded fixtures are.
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "text/tokenizer.h"

namespace redhare::test {

inline std::filesystem::path source_dir() {
  if (const char* env = std::getenv("REDHARE_SOURCE_DIR")) return env;
  return REDHARE_SOURCE_DIR;
}

// "synthetic-X" tokenizers are small committed fixtures; the others are real files fetched into
// .cache by tools/tokenizer/fetch_tokenizers.sh.
inline std::filesystem::path tokenizer_dir(const std::string& name) {
  const std::string synthetic = "synthetic-";
  if (name.rfind(synthetic, 0) == 0) {
    return source_dir() / "fixtures" / "tokenizer" / "synthetic" / name.substr(synthetic.size());
  }
  return source_dir() / ".cache" / "tokenizers" / name;
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline nlohmann::json read_json(const std::filesystem::path& p) {
  if (!std::filesystem::exists(p)) {
    ADD_FAILURE() << p << " is missing";
    return nlohmann::json();
  }
  return nlohmann::json::parse(read_text(p));
}

// The real tokenizer files are not committed; a missing one is a failure, never a skip.
// Loaded once per process: the large vocabularies take a moment to load.
inline const Tokenizer* load_fetched(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
  if (auto it = loaded.find(name); it != loaded.end()) return it->second.get();
  const auto dir = tokenizer_dir(name);
  if (!std::filesystem::exists(dir / "tokenizer.json")) {
    ADD_FAILURE() << dir / "tokenizer.json"
                  << " is missing: run tools/tokenizer/fetch_tokenizers.sh before the tests";
    return nullptr;
  }
  auto tok = std::make_unique<Tokenizer>(Tokenizer::from_dir(dir));
  return (loaded[name] = std::move(tok)).get();
}

inline std::string case_text(const nlohmann::json& c) {
  if (c.contains("hex")) {
    const std::string hex = c["hex"].get<std::string>();
    std::string raw;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
      raw.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
    return raw;
  }
  return c["text"].get<std::string>();
}

}  // namespace redhare::test
