#include "text/jinja/chat_template.h"

#include <filesystem>
#include <fstream>
#include <list>
#include <mutex>
#include <sstream>

namespace redhare::jinja {

namespace {

// transformers (5.x) copies a message's reasoning, whichever of its names it came under, to both
// `thinking` (first) and `reasoning_content` (last), so templates reading either name see it.
nlohmann::ordered_json alias_reasoning(const nlohmann::ordered_json& message) {
  static const char* const kNames[] = {"reasoning_content", "thinking", "reasoning"};
  const nlohmann::ordered_json* reasoning = nullptr;
  for (const char* name : kNames) {
    auto it = message.find(name);
    if (it != message.end() && !it->is_null()) {
      reasoning = &*it;
      break;
    }
  }
  if (!reasoning) return message;
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  out["thinking"] = *reasoning;
  for (auto it = message.begin(); it != message.end(); ++it) out[it.key()] = it.value();
  out["reasoning_content"] = *reasoning;
  return out;
}

// A server renders the same template for every request; parsing it once saves the lexing and
// parsing per request. Templates are immutable once parsed, so sharing them across threads is
// safe; the cache holds the few most recent ones.
Template cached_parse(const std::string& source) {
  static std::mutex mutex;
  static std::list<std::pair<std::string, Template>> recent;
  constexpr std::size_t kCapacity = 8;
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = recent.begin(); it != recent.end(); ++it) {
      if (it->first == source) {
        recent.splice(recent.begin(), recent, it);
        return it->second;
      }
    }
  }
  Template parsed = Template::parse(source);
  std::lock_guard<std::mutex> lock(mutex);
  recent.emplace_front(source, parsed);
  if (recent.size() > kCapacity) recent.pop_back();
  return parsed;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read ", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string apply_chat_template(const std::string& tmpl, const nlohmann::ordered_json& messages,
                                const nlohmann::ordered_json& tools_or_null,
                                bool add_generation_prompt,
                                const nlohmann::ordered_json& extra_kwargs,
                                const std::string& bos_token, const std::string& eos_token,
                                const RenderOptions& options) {
  if (!messages.is_array()) fail("chat messages must be a JSON array");
  if (messages.empty())
    fail("Cannot apply chat template to an empty conversation. Provide at least one message.");
  if (!tools_or_null.is_null() && !tools_or_null.is_array())
    fail("chat tools must be a JSON array or null");
  if (!extra_kwargs.is_null() && !extra_kwargs.is_object())
    fail("chat template kwargs must be a JSON object");
  nlohmann::ordered_json chat = nlohmann::ordered_json::array();
  for (const auto& message : messages) {
    if (!message.is_object()) fail("Chat messages should be dicts, but got ", message.dump());
    // transformers drops keys whose value is None: APIs send `content: null` or
    // `tool_calls: null`, which templates handle only as absent.
    nlohmann::ordered_json kept = nlohmann::ordered_json::object();
    for (auto it = message.begin(); it != message.end(); ++it) {
      if (!it.value().is_null()) kept[it.key()] = it.value();
    }
    chat.push_back(alias_reasoning(kept));
  }
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  context["messages"] = std::move(chat);
  context["tools"] = tools_or_null;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = bos_token;
  context["eos_token"] = eos_token;
  if (extra_kwargs.is_object()) {
    for (auto it = extra_kwargs.begin(); it != extra_kwargs.end(); ++it)
      context[it.key()] = it.value();
  }
  return cached_parse(tmpl).render(context, options);
}

std::string load_chat_template_from_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  const fs::path jinja_file = root / "chat_template.jinja";
  if (fs::exists(jinja_file)) return read_file(jinja_file);
  const fs::path config_file = root / "tokenizer_config.json";
  if (!fs::exists(config_file)) {
    fail("no chat template in ", dir,
         ": neither chat_template.jinja nor tokenizer_config.json exists");
  }
  nlohmann::ordered_json config;
  try {
    config = nlohmann::ordered_json::parse(read_file(config_file));
  } catch (const nlohmann::json::exception& e) {
    fail(config_file.string(), " is not valid JSON: ", e.what());
  }
  auto it = config.find("chat_template");
  if (!config.is_object() || it == config.end() || it->is_null()) {
    fail(config_file.string(), " has no chat_template");
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
    fail(config_file.string(), " lists chat templates but none is named \"default\"");
  }
  fail(config_file.string(), ": chat_template must be a string or a list of {name, template}");
}

std::string special_token_text(const nlohmann::ordered_json& config, const std::string& key) {
  if (!config.is_object()) return {};
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  fail("tokenizer_config.json: ", key, " must be a string or an object with \"content\"");
}

}  // namespace redhare::jinja
