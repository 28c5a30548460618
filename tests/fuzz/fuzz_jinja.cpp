// libFuzzer target: arbitrary bytes as a chat template, parsed and rendered against a small
// conversation with tight limits. Any outcome other than output or a redhare::Error (a crash, a
// sanitizer report, a hang past the limits) is a bug. Seed it with real templates, from a copy
// (libFuzzer adds to its first corpus folder):
//   cp -r fixtures/chat_templates/templates /tmp/jinja-corpus
//   build-fuzz-jinja/tests/fuzz/fuzz_jinja -max_total_time=30 -max_len=4096 /tmp/jinja-corpus
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "text/jinja/chat_template.h"
#include "text/jinja/template.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const nlohmann::ordered_json context = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "sys"},
      {"role": "user", "content": "hi <b>&amp;</b> é"},
      {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {"a": 1, "b": [1.5, null, true]}}}]},
      {"role": "tool", "content": "42"}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "n": 3
  })");
  redhare::jinja::RenderOptions options;
  options.max_steps = 100000;
  options.max_output_bytes = 1 << 16;
  options.max_call_depth = 16;
  try {
    const auto tmpl = redhare::jinja::Template::parse(
        std::string_view(reinterpret_cast<const char*>(data), size));
    (void)tmpl.render(context, options);
  } catch (const redhare::Error&) {
  }
  return 0;
}
