// `redhare chat-template`: prints the prompt a model's chat template makes of a conversation, as
// transformers' apply_chat_template would, so that templates can be checked without a server.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "apps/redhare/commands.h"
#include "core/error.h"
#include "text/jinja/chat_template.h"

namespace redhare::app {

namespace {

constexpr const char* kUsage =
    "usage: redhare chat-template --model DIR --messages FILE.json [--no-generation-prompt] "
    "[--kwargs JSON]\n"
    "  FILE.json: a list of messages, or {\"messages\": [...], \"tools\": [...]}\n"
    "  --kwargs: a JSON object of extra template variables, e.g. '{\"enable_thinking\": false}'\n";

nlohmann::ordered_json read_json(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read ", what, " file ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::ordered_json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail(path, " is not valid JSON: ", e.what());
  }
}

}  // namespace

int cmd_chat_template(const std::vector<std::string>& args) {
  std::string model_dir, messages_file, kwargs_text;
  bool add_generation_prompt = true;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) {
        std::fprintf(stderr, "%s needs a value\n%s", a.c_str(), kUsage);
        std::exit(2);
      }
      return args[++i];
    };
    if (a == "--model") {
      model_dir = value();
    } else if (a == "--messages") {
      messages_file = value();
    } else if (a == "--kwargs") {
      kwargs_text = value();
    } else if (a == "--no-generation-prompt") {
      add_generation_prompt = false;
    } else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "unknown argument %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (model_dir.empty() || messages_file.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  try {
    const std::string tmpl = jinja::load_chat_template_from_dir(model_dir);
    nlohmann::ordered_json config;
    const auto config_path = std::filesystem::path(model_dir) / "tokenizer_config.json";
    if (std::filesystem::exists(config_path))
      config = read_json(config_path.string(), "tokenizer config");
    const nlohmann::ordered_json input = read_json(messages_file, "messages");
    nlohmann::ordered_json messages, tools;
    if (input.is_array()) {
      messages = input;
    } else if (input.is_object() && input.contains("messages")) {
      messages = input["messages"];
      if (input.contains("tools")) tools = input["tools"];
    } else {
      fail(messages_file, ": expected a list of messages or an object with \"messages\"");
    }
    nlohmann::ordered_json kwargs;
    if (!kwargs_text.empty()) {
      try {
        kwargs = nlohmann::ordered_json::parse(kwargs_text);
      } catch (const nlohmann::json::exception& e) {
        fail("--kwargs is not valid JSON: ", e.what());
      }
      if (!kwargs.is_object()) fail("--kwargs must be a JSON object");
    }
    const std::string prompt =
        jinja::apply_chat_template(tmpl, messages, tools, add_generation_prompt, kwargs,
                                   jinja::special_token_text(config, "bos_token"),
                                   jinja::special_token_text(config, "eos_token"));
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

}  // namespace redhare::app
