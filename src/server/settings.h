// redhare's settings: one schema with defaults, read from a YAML file and overridden on the
// command line as section.key=value. Names follow Chitu's where Chitu has one.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace redhare {

struct SettingDef {
  std::string key;    // "section.name"
  std::string type;   // "string", "int", "float", "bool", "list"
  nlohmann::json default_value;
  std::string help;
};

class Settings {
 public:
  static const std::vector<SettingDef>& schema();
  // The defaults of every key.
  Settings();

  // Merges a YAML file of nested sections ("serve:\n  port: 8000"); unknown keys and wrong
  // types are errors naming the file and the key.
  void load_yaml_file(const std::string& path);
  void load_yaml_text(const std::string& text, const std::string& source);
  // "section.key=value"; the value is read as YAML ("8000", "true", "[a, b]", "{...}").
  void apply_override(const std::string& assignment);

  const nlohmann::json& get(const std::string& key) const;
  std::string str(const std::string& key) const { return get(key).get<std::string>(); }
  int64_t integer(const std::string& key) const { return get(key).get<int64_t>(); }
  double number(const std::string& key) const { return get(key).get<double>(); }
  bool boolean(const std::string& key) const { return get(key).get<bool>(); }

  // Every key with its type, default and meaning, for --help.
  static std::string help_text();

 private:
  void set(const std::string& key, const nlohmann::json& value, const std::string& source);
  std::map<std::string, nlohmann::json> values_;
};

}  // namespace redhare
