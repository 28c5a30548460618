// FP8 weights: loading scaled e4m3 checkpoints into redhare's kF8B128 blocks, and quantizing
// float weights to block-scaled FP8 (redhare convert).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace redhare {

// Packs an F8_E4M3 weight [N, K] and its dequantization scale into kF8B128 (each 128 values of a
// row followed by their scale). The scale is, by shape: with `block` = {bn, bk} (bk a multiple of
// 128), [ceil(N / bn), ceil(K / bk)]; without, one value (per tensor) or N values ([N] or [N, 1],
// per output channel). Any float dtype. Errors name `what` and the mismatch: K not a multiple of
// 128, a scale of the wrong shape, a negative or non-finite scale, a NaN code in the weight.
Tensor pack_fp8_weight(const Tensor& weight, const Tensor& scale, const std::vector<int64_t>& block,
                       const std::string& what);

// Block-scaled FP8 of a float weight [N, K] (K a multiple of `block`): per block x block tile the
// scale is amax / 448 (the largest e4m3 value), each value rounded to nearest even e4m3 of
// value / scale. Returns the e4m3 bytes [N, K] and the f32 scales [ceil(N / block), K / block]
// (DeepSeek-V3's weight_scale_inv: value = fp8 * scale).
struct Fp8Quantized {
  Tensor weight;  // F8_E4M3 [N, K]
  Tensor scale;   // f32 [ceil(N / block), K / block]
};
Fp8Quantized quantize_fp8_blocks(const Tensor& weight, int64_t block = 128);

// Whether `name` (a checkpoint tensor) is a weight redhare convert quantizes: the 2-D projection
// weights of the decoder layers (attention q/k/v/o, MLP gate/up/down), not embeddings, norms or
// the LM head.
bool is_fp8_quantizable(const std::string& name);

// redhare convert: writes `out_dir` as a copy of the checkpoint in `model_dir` whose projection
// weights (is_fp8_quantizable, rows a multiple of `block`) are block-scaled FP8 — e4m3 `weight`
// plus f32 `weight_scale_inv`, and quantization_config {quant_method: fp8, fmt: e4m3,
// activation_scheme: dynamic, weight_block_size: [block, block]} in config.json, the layout
// DeepSeek-V3 ships — with tokenizer and generation files copied. Refuses an FP8 input, an
// output directory holding a checkpoint (unless `force`), and the input directory as output.
struct Fp8ConvertReport {
  int64_t quantized = 0, kept = 0, bytes_in = 0, bytes_out = 0;
  std::vector<std::string> left_unquantized;  // projection weights whose rows do not divide
};
Fp8ConvertReport convert_checkpoint_to_fp8(const std::string& model_dir, const std::string& out_dir,
                                           int64_t block = 128, bool force = false);

}  // namespace redhare
