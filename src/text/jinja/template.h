// A Jinja interpreter for the chat templates models ship, producing exactly what Python's jinja2
// produces under the environment transformers sets up for apply_chat_template
// (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls, its tojson,
// raise_exception and strftime_now).
//
// Templates come from model files and are untrusted: every failure is a TemplateError naming the
// line, and rendering is bounded in steps, output size and call depth. Nothing a template does can
// reach files, the environment or the process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace redhare::jinja {

class TemplateError : public Error {
 public:
  // `raised` marks a raise_exception() call made by the template itself: the template rejected
  // its input (a caller's fault), rather than being broken.
  TemplateError(const std::string& message, int line, int column, bool raised = false);

  const std::string& message() const { return message_; }
  int line() const { return line_; }
  int column() const { return column_; }
  bool raised() const { return raised_; }

 private:
  std::string message_;
  int line_;
  int column_;
  bool raised_;
};

struct RenderOptions {
  std::size_t max_output_bytes = std::size_t{16} << 20;  // also caps every string built
  std::uint64_t max_steps = 20'000'000;                  // expression and statement evaluations
  int max_call_depth = 64;                               // nested macro calls
  // What strftime_now() reads as "now", in seconds since the epoch, formatted as UTC; unset means
  // the current local time, as transformers does. Set it to make renders reproducible.
  std::optional<std::int64_t> fixed_unix_time;
};

struct Program;

class Template {
 public:
  static Template parse(std::string_view source);

  // `context` must be a JSON object; its keys become the template's variables. It is an
  // ordered_json because templates iterate dicts (tojson of tool schemas, for one) and Python
  // keeps insertion order.
  std::string render(const nlohmann::ordered_json& context,
                     const RenderOptions& options = {}) const;

 private:
  explicit Template(std::shared_ptr<const Program> program) : program_(std::move(program)) {}
  std::shared_ptr<const Program> program_;
};

}  // namespace redhare::jinja
