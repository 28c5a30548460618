// Rendering a conversation through a model's chat template the way transformers'
// apply_chat_template does, and finding that template in a model directory.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "text/jinja/template.h"

namespace redhare::jinja {

// Renders `tmpl` with the context transformers builds: messages (with None-valued keys dropped,
// and reasoning fields aliased as transformers 5 does), tools (null when absent), documents
// (null), add_generation_prompt, bos_token, eos_token, then every key of `extra_kwargs` (an
// object or null), which overrides the ones before it.
std::string apply_chat_template(const std::string& tmpl, const nlohmann::ordered_json& messages,
                                const nlohmann::ordered_json& tools_or_null,
                                bool add_generation_prompt,
                                const nlohmann::ordered_json& extra_kwargs,
                                const std::string& bos_token, const std::string& eos_token,
                                const RenderOptions& options = {});

// The chat template of a model directory: chat_template.jinja when present, else the
// `chat_template` of tokenizer_config.json (a string, or a list of {name, template} from which
// "default" is taken).
std::string load_chat_template_from_dir(const std::string& dir);

// A special token as tokenizer_config.json writes it: a string, an object with "content", or
// absent/null (empty string).
std::string special_token_text(const nlohmann::ordered_json& config, const std::string& key);

}  // namespace redhare::jinja
