// `redhare tokenize --model DIR [--no-special] [--json] TEXT`: prints the token ids of TEXT.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "text/tokenizer.h"

namespace redhare::app {

namespace {

constexpr const char* kUsage =
    "usage: redhare tokenize --model DIR [--no-special] [--json] TEXT\n"
    "  Encodes TEXT with DIR/tokenizer.json and prints the ids, space-separated.\n"
    "  --model DIR    model directory holding tokenizer.json (and tokenizer_config.json)\n"
    "  --no-special   do not add the special tokens (BOS/EOS) of the post-processor\n"
    "  --json         print {\"ids\": [...]} instead\n"
    "  TEXT           the text; \"-\" reads it from standard input\n";

}  // namespace

int cmd_tokenize(const std::vector<std::string>& args) {
  std::string model, text;
  bool add_special = true, as_json = false, have_text = false;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--model" && i + 1 < args.size()) {
      model = args[++i];
    } else if (a.rfind("--model=", 0) == 0) {
      model = a.substr(8);
    } else if (a == "--no-special") {
      add_special = false;
    } else if (a == "--json") {
      as_json = true;
    } else if (a == "--") {
      if (i + 1 < args.size()) {
        text = args[++i];
        have_text = true;
      }
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      std::fprintf(stderr, "redhare tokenize: unknown option '%s'\n%s", a.c_str(), kUsage);
      return 2;
    } else if (!have_text) {
      text = a;
      have_text = true;
    } else {
      std::fprintf(stderr, "redhare tokenize: more than one TEXT given\n%s", kUsage);
      return 2;
    }
  }
  if (model.empty() || !have_text) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  if (text == "-") text.assign(std::istreambuf_iterator<char>(std::cin), {});
  try {
    const Tokenizer tok = Tokenizer::from_dir(model);
    const std::vector<int32_t> ids = tok.encode(text, add_special);
    if (as_json) {
      std::printf("%s\n", nlohmann::json{{"ids", ids}}.dump().c_str());
    } else {
      std::string line;
      for (std::size_t k = 0; k < ids.size(); ++k) {
        if (k) line.push_back(' ');
        line += std::to_string(ids[k]);
      }
      std::printf("%s\n", line.c_str());
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "redhare tokenize: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace redhare::app
