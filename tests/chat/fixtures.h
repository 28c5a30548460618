// Loads the recorded jinja2 renders under fixtures/chat_templates/.
#pragma once

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "text/jinja/template.h"

namespace redhare::test {

inline std::string chat_fixture_path(const std::string& name) {
  return std::string(REDHARE_SOURCE_DIR) + "/fixtures/chat_templates/" + name;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// {"generated_with": {...}, "cases": [...]}; no cases when the file is missing, so that the suites
// built on it are empty and the explicit case-count tests fail.
inline const nlohmann::ordered_json& load_fixture(const std::string& name) {
  static std::map<std::string, nlohmann::ordered_json> loaded;
  auto it = loaded.find(name);
  if (it == loaded.end()) {
    const std::string text = read_text(chat_fixture_path(name));
    nlohmann::ordered_json doc =
        text.empty() ? nlohmann::ordered_json::object() : nlohmann::ordered_json::parse(text);
    if (!doc.contains("cases")) doc["cases"] = nlohmann::ordered_json::array();
    it = loaded.emplace(name, std::move(doc)).first;
  }
  return it->second;
}

// The instant make_fixtures.py froze strftime_now() at.
inline jinja::RenderOptions fixture_render_options(const std::string& name) {
  jinja::RenderOptions options;
  const auto& meta = load_fixture(name).value("generated_with", nlohmann::ordered_json::object());
  if (meta.contains("fixed_unix_time"))
    options.fixed_unix_time = meta["fixed_unix_time"].get<std::int64_t>();
  return options;
}

}  // namespace redhare::test
