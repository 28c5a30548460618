// Rotary embedding frequencies, computed once at load time, as transformers computes them.
#pragma once

#include <vector>

#include "formats/hf_config.h"

namespace redhare {

// inv_freq[i] for i in [0, head_dim / 2), after the config's rope scaling.
std::vector<float> rope_inv_freq(const ModelConfig& config);

}  // namespace redhare
