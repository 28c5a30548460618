#include "models/rope.h"

#include <cmath>

namespace redhare {

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> f(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // transformers: 1 / base ** (arange(0, dim, 2) / dim), the exponent in f32.
    float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    f[static_cast<size_t>(i)] = 1.0f / std::pow(static_cast<float>(c.rope_theta), exponent);
  }
  if (!c.rope_freq_factors.empty()) {
    for (int64_t i = 0; i < half; ++i) f[static_cast<size_t>(i)] /= c.rope_freq_factors[static_cast<size_t>(i)];
    return f;
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.type == "linear") {
    for (float& v : f) v = static_cast<float>(v / s.factor);
  } else if (s.type == "llama3") {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and the band between
    // interpolated smoothly.
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    for (float& v : f) {
      const double wavelen = 2.0 * M_PI / v;
      if (wavelen > low_wavelen) {
        v = static_cast<float>(v / s.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_len / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        v = static_cast<float>((1.0 - smooth) * v / s.factor + smooth * v);
      }
    }
  }
  return f;
}

}  // namespace redhare
