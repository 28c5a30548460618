// Models stored as GGUF: the config from the file's metadata and the weights from its tensors
// (block-quantized ones stay packed and are computed on directly).
#pragma once

#include <memory>
#include <string>

#include "formats/gguf.h"
#include "models/model.h"

namespace redhare {

// The .gguf file `path` names: the path itself, or the single .gguf in a directory that has no
// config.json. Empty when `path` is not a GGUF model.
std::string find_gguf_file(const std::string& path);
ModelConfig config_from_gguf(const GgufFile& file);
std::unique_ptr<WeightSource> gguf_weight_source(std::shared_ptr<GgufFile> file, const ModelConfig& config);

}  // namespace redhare

namespace redhare {

// Where scripts/fetch_default_model.sh puts the built-in default model (SmolLM2-135M-Instruct):
// $REDHARE_HOME, else $XDG_CACHE_HOME/redhare, else ~/.cache/redhare, then
// models/SmolLM2-135M-Instruct.Q4_1.gguf. Returns the path whether or not the file exists.
std::string default_model_path();
// default_model_path() when it exists; otherwise throws an error that says how to fetch it.
std::string require_default_model();

}  // namespace redhare
