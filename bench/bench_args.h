// Command-line helpers shared by the benchmark programs.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace redhare::bench {

// "1,8,64" -> {1, 8, 64}; empty items are skipped, so "" is an empty list.
inline std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) v.push_back(std::stoll(s.substr(i, j - i)));
    i = j + 1;
  }
  return v;
}

// "a,b" -> {"a", "b"}; empty items are skipped.
inline std::set<std::string> parse_names(const std::string& s) {
  std::set<std::string> v;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) v.insert(s.substr(i, j - i));
    i = j + 1;
  }
  return v;
}

}  // namespace redhare::bench
