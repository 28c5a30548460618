// The interpreter's state during one render, and the built-in filters, tests, methods and
// globals it dispatches to. Internal to the jinja folder.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/jinja/ast.h"
#include "text/jinja/template.h"
#include "text/jinja/value.h"

namespace redhare::jinja {

// Thrown by raise_exception(); the interpreter turns it into a TemplateError marked `raised`.
class TemplateRaise : public Error {
 public:
  explicit TemplateRaise(const std::string& message) : Error(message) {}
};

struct Scope {
  std::vector<std::pair<std::string, Value>> vars;
  std::shared_ptr<Scope> parent;

  Value* find_local(std::string_view name);
  void set(const std::string& name, Value value);
};

enum class Flow : std::uint8_t { Normal, Break, Continue };

class Runtime {
 public:
  Runtime(const Program& program, const RenderOptions& options);

  std::string render(const nlohmann::ordered_json& context);

  // Counts one unit of work; fails once the render's step budget is spent.
  void step() {
    if (++steps_ > options_.max_steps) fail_limit("step limit");
  }
  // Every string a template builds goes through here, so that doubling a string in a loop
  // cannot exhaust memory before the output limit would catch it.
  void check_size(std::size_t bytes) const {
    if (bytes > options_.max_output_bytes) fail_limit("output size limit");
  }
  Value call(const Value& callee, CallArgs& args);
  const RenderOptions& options() const { return options_; }
  // Namespaces are the one mutable container, so the only way to build a reference cycle
  // (`{% set ns.self = ns %}`); the render empties every namespace it made when it ends.
  void track_namespace(const Value& ns) { namespaces_.push_back(ns.dict); }

 private:
  [[noreturn]] void fail_limit(const char* what) const;

  Flow exec_body(const Body& body);
  Flow exec(const Stmt& s);
  Flow exec_inner(const Stmt& s);
  Flow exec_for(const Stmt& s);
  void exec_set(const Stmt& s, Value value);
  Value make_macro(const Stmt& s, const Stmt* caller_block);
  std::string capture(const Body& body);

  Value eval(const Expr& e);
  Value eval_call(const Expr& e);
  Value eval_binary(const Expr& e);
  Value eval_compare(const Expr& e);
  Value eval_item(const Expr& e);
  void eval_args(const Expr& e, std::size_t first, CallArgs& args);
  Value lookup(const std::string& name);
  void assign(const std::vector<std::string>& targets, bool tuple, Value value);

  const Program& program_;
  const RenderOptions& options_;
  // Evaluation recurses over the template's tree and through macro calls; this bounds the total
  // so that no template can exhaust the native stack.
  struct RecursionGuard {
    explicit RecursionGuard(Runtime& rt) : runtime(rt) {
      if (++runtime.recursion_ > kMaxRecursion) fail("template rendering nests too deeply");
    }
    ~RecursionGuard() { --runtime.recursion_; }
    Runtime& runtime;
  };
  static constexpr int kMaxRecursion = 1000;
  int recursion_ = 0;
  std::uint64_t steps_ = 0;
  int call_depth_ = 0;
  std::string* out_ = nullptr;
  std::shared_ptr<Scope> root_;
  std::shared_ptr<Scope> scope_;
  Value pending_filter_input_;
  std::vector<std::weak_ptr<DictData>>
      namespaces_;  // the rendered body a filter block or set block filters
};

// Filters and tests, by jinja2 name. Unknown names are rejected when the template is parsed, as
// jinja2 does when it compiles.
bool has_filter(std::string_view name);
bool has_test(std::string_view name);
Value apply_filter(Runtime& rt, std::string_view name, const Value& input, CallArgs& args);
bool apply_test(Runtime& rt, std::string_view name, const Value& input, CallArgs& args);

// `obj.name`: Python attribute first (methods of str, dict, list), then item, as jinja2's
// sandboxed getattr does. Methods that mutate (list.append, dict.update...) resolve to an
// undefined that fails when called, as the immutable sandbox has it.
Value get_attribute(Runtime& rt, const Value& obj, const std::string& name);
// `obj[key]`: item first, then attribute for string keys.
Value get_item(Runtime& rt, const Value& obj, const Value& key);
// What `for` iterates and `in`, `list`, `join`... see: items of a list, keys of a dict,
// characters of a string. Fails for scalars as Python does.
std::vector<Value> iterate(const Value& v);
Value global_value(std::string_view name);

// Python string helpers shared by filters and methods.
std::string py_strip(const std::string& s, const Value* chars, bool left, bool right);
std::string py_upper(const std::string& s);
std::string py_lower(const std::string& s);
std::string py_title(const std::string& s);
std::string py_capitalize(const std::string& s);
std::string py_replace(Runtime& rt, const std::string& s, const std::string& from,
                       const std::string& to, std::int64_t count);
std::int64_t to_index(const Value& v, const char* what);
// markupsafe's escape(): & < > " ' as entities.
std::string html_escape(const std::string& s);
// Python's `format % args` (the % operator on strings and the format filter).
std::string percent_format(Runtime& rt, const std::string& format, const Value& args);

}  // namespace redhare::jinja
