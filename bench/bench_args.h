// Command-line helpers shared by the benchmark programs.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace redhare::bench {

// "a,,b" -> {"a", "b"}: the comma-separated items, empty ones skipped, so "" is an empty list.
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> v;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) v.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return v;
}

// "1,8,64" -> {1, 8, 64}.
inline std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  for (const std::string& item : split_list(s)) v.push_back(std::stoll(item));
  return v;
}

// "a,b" -> {"a", "b"}.
inline std::set<std::string> parse_names(const std::string& s) {
  const std::vector<std::string> items = split_list(s);
  return {items.begin(), items.end()};
}

}  // namespace redhare::bench
