// redhare convert: a bf16/f16/f32 checkpoint rewritten with block-scaled FP8 projection weights, in
// the layout DeepSeek-V3 ships (e4m3 `weight` + f32 `weight_scale_inv` per 128x128 block, and
// quantization_config {quant_method: fp8, weight_block_size: [128, 128]} in config.json), so that
// any model can be run, tested and benchmarked in FP8. Embeddings, norms, biases and the LM head
// stay as they are. Tokenizer and generation files are copied alongside.
#include <cstdio>

#include "apps/redhare/cli.h"
#include "apps/redhare/commands.h"
#include "core/error.h"
#include "models/fp8.h"

namespace redhare::app {

int cmd_convert(const std::vector<std::string>& args) {
  CLI::App app{"Quantize a checkpoint's projection weights to block-scaled FP8 (e4m3, 128x128 blocks).",
               "redhare convert"};
  std::string model_dir, out_dir;
  int64_t block = 128;
  bool force = false;
  app.add_option("--model", model_dir, "checkpoint directory (config.json + safetensors)")->required();
  app.add_option("--out", out_dir, "directory to write the FP8 checkpoint to")->required();
  app.add_option("--block", block, "block size (rows and columns of each scaled tile)")->capture_default_str();
  app.add_flag("--force", force, "write into --out even when it already holds a checkpoint");
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  if (block <= 0 || block % 128 != 0) fail("--block must be a positive multiple of 128, got ", block);
  const Fp8ConvertReport r = convert_checkpoint_to_fp8(model_dir, out_dir, block, force);
  for (const std::string& n : r.left_unquantized)
    std::fprintf(stderr, "convert: %s kept in its float type (its rows are not a multiple of %lld values)\n",
                 n.c_str(), static_cast<long long>(block));
  std::printf("%s: %lld weights quantized to FP8 (%lldx%lld blocks), %lld tensors kept; %.1f MB -> %.1f MB\n",
              out_dir.c_str(), static_cast<long long>(r.quantized), static_cast<long long>(block),
              static_cast<long long>(block), static_cast<long long>(r.kept), static_cast<double>(r.bytes_in) / 1e6,
              static_cast<double>(r.bytes_out) / 1e6);
  return 0;
}

}  // namespace redhare::app
