#include "models/assets.h"

#include <filesystem>
#include <set>

#include "core/logging.h"
#include "formats/gguf.h"
#include "models/gguf_model.h"
#include "text/gguf_tokenizer.h"
#include "text/jinja/chat_template.h"

namespace redhare {

TextAssets load_text_assets(const std::string& model_path, const ModelConfig& config,
                            const std::string& tokenizer_dir) {
  namespace fs = std::filesystem;
  TextAssets a;
  std::set<int32_t> eos;
  for (int64_t id : config.eos_token_ids) eos.insert(static_cast<int32_t>(id));
  const std::string dir = tokenizer_dir.empty() ? model_path : tokenizer_dir;
  const std::string gguf = find_gguf_file(dir);
  if (!gguf.empty()) {
    GgufFile f = GgufFile::open(gguf);
    GgufTokenizerJson j = gguf_tokenizer_json(f);
    a.tokenizer = std::make_unique<Tokenizer>(
        Tokenizer::from_json_strings(j.tokenizer_json, j.tokenizer_config_json, {}, gguf + " (tokenizer.ggml.*)"));
    if (f.contains("tokenizer.chat_template")) a.chat_template = f.get_string("tokenizer.chat_template");
  } else if (fs::exists(fs::path(dir) / "tokenizer.json")) {
    a.tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_dir(dir));
    try {
      a.chat_template = jinja::load_chat_template_from_dir(dir);
    } catch (const Error& e) {
      log_info("no chat template: ", e.what());
    }
    for (int64_t id : GenerationConfig::load(model_path).eos_token_ids) eos.insert(static_cast<int32_t>(id));
  }
  if (a.tokenizer) {
    a.bos_token = jinja::special_token_text(a.tokenizer->config(), "bos_token");
    a.eos_token = jinja::special_token_text(a.tokenizer->config(), "eos_token");
    if (a.tokenizer->eos_id()) eos.insert(*a.tokenizer->eos_id());
  }
  if (!a.chat_template.empty()) jinja::Template::parse(a.chat_template);  // report a broken one now
  a.eos_token_ids.assign(eos.begin(), eos.end());
  return a;
}

}  // namespace redhare
