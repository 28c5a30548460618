// Walks the statement tree, with jinja2's scoping: `if` shares its scope, each loop iteration and
// each macro call gets a fresh one, and names fall back to the template context, then globals.
#include <cmath>

#include "text/jinja/runtime.h"

namespace redhare::jinja {

Value* Scope::find_local(std::string_view name) {
  for (auto& [k, v] : vars) {
    if (k == name) return &v;
  }
  return nullptr;
}

void Scope::set(const std::string& name, Value value) {
  if (Value* v = find_local(name)) {
    *v = std::move(value);
  } else {
    vars.emplace_back(name, std::move(value));
  }
}

namespace {

std::int64_t int_add(std::int64_t x, std::int64_t y) {
  std::int64_t r;
  if (__builtin_add_overflow(x, y, &r)) fail("integer overflow");
  return r;
}
std::int64_t int_sub(std::int64_t x, std::int64_t y) {
  std::int64_t r;
  if (__builtin_sub_overflow(x, y, &r)) fail("integer overflow");
  return r;
}
std::int64_t int_mul(std::int64_t x, std::int64_t y) {
  std::int64_t r;
  if (__builtin_mul_overflow(x, y, &r)) fail("integer overflow");
  return r;
}

std::int64_t as_int(const Value& v) {
  return v.kind == Kind::Bool ? v.boolean : v.integer;
}

[[noreturn]] void bad_operands(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail(a.str().empty() ? "undefined value" : a.str());
  if (b.is_undefined()) fail(b.str().empty() ? "undefined value" : b.str());
  fail("unsupported operand type(s) for ", op, ": '", python_type_name(a), "' and '",
       python_type_name(b), "'");
}

Value repeat(Runtime& rt, const Value& seq, std::int64_t times) {
  if (times < 0) times = 0;
  if (seq.is_string()) {
    rt.check_size(seq.str().size() * static_cast<std::size_t>(times));
    std::string out;
    for (std::int64_t i = 0; i < times; ++i) out += seq.str();
    return Value::from_string(std::move(out));
  }
  rt.check_size(seq.list->items.size() * static_cast<std::size_t>(times));
  std::vector<Value> out;
  for (std::int64_t i = 0; i < times; ++i) {
    rt.step();
    out.insert(out.end(), seq.list->items.begin(), seq.list->items.end());
  }
  return Value::from_list(std::move(out), seq.list->tuple);
}

double python_fmod(double a, double b) {
  double m = std::fmod(a, b);
  if (m != 0 && ((m < 0) != (b < 0))) m += b;
  return m;
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Kind::String:
      if (!item.is_string()) {
        fail("'in <string>' requires string as left operand, not ", python_type_name(item));
      }
      return container.str().find(item.str()) != std::string::npos;
    case Kind::List:
      for (const auto& v : container.list->items) {
        if (equals(v, item)) return true;
      }
      return false;
    case Kind::Dict:
    case Kind::Namespace:
      return container.dict->find(item) != nullptr;
    case Kind::Undefined:
      return false;
    default:
      fail("argument of type '", python_type_name(container), "' is not iterable");
  }
}

}  // namespace

Runtime::Runtime(const Program& program, const RenderOptions& options)
    : program_(program), options_(options) {}

void Runtime::fail_limit(const char* what) const {
  fail("template rendering exceeded the ", what);
}

std::string Runtime::render(const nlohmann::ordered_json& context) {
  if (!context.is_object()) fail("template context must be a JSON object");
  root_ = std::make_shared<Scope>();
  for (auto it = context.begin(); it != context.end(); ++it) {
    root_->set(it.key(), from_json(it.value()));
  }
  scope_ = root_;
  std::string out;
  out_ = &out;
  struct Cleanup {
    Runtime& rt;
    ~Cleanup() {
      for (auto& weak : rt.namespaces_) {
        if (auto ns = weak.lock()) ns->entries.clear();
      }
      rt.namespaces_.clear();
      rt.scope_.reset();
      rt.root_.reset();
    }
  } cleanup{*this};
  exec_body(program_.body);
  return out;
}

Flow Runtime::exec_body(const Body& body) {
  for (const auto& s : body) {
    const Flow f = exec(*s);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

std::string Runtime::capture(const Body& body) {
  std::string buffer;
  std::string* saved = out_;
  out_ = &buffer;
  try {
    exec_body(body);
  } catch (...) {
    out_ = saved;
    throw;
  }
  out_ = saved;
  return buffer;
}

Flow Runtime::exec(const Stmt& s) {
  step();
  RecursionGuard guard(*this);
  try {
    return exec_inner(s);
  } catch (const TemplateError&) {
    throw;
  } catch (const TemplateRaise& e) {
    throw TemplateError(e.what(), s.line, s.column, true);
  } catch (const Error& e) {
    throw TemplateError(e.what(), s.line, s.column);
  }
}

Flow Runtime::exec_inner(const Stmt& s) {
  switch (s.kind) {
    case StmtKind::Text:
      check_size(out_->size() + s.text.size());
      *out_ += s.text;
      return Flow::Normal;
    case StmtKind::Output: {
      const std::string text = to_str(eval(*s.expr));
      check_size(out_->size() + text.size());
      *out_ += text;
      return Flow::Normal;
    }
    case StmtKind::If:
      for (const auto& [cond, body] : s.branches) {
        if (truthy(eval(*cond))) return exec_body(body);
      }
      return exec_body(s.else_body);
    case StmtKind::For:
      return exec_for(s);
    case StmtKind::Set:
      exec_set(s, eval(*s.expr));
      return Flow::Normal;
    case StmtKind::SetBlock: {
      Value v = Value::from_string(capture(s.body));
      if (s.expr) {
        pending_filter_input_ = std::move(v);
        v = eval(*s.expr);
      }
      exec_set(s, std::move(v));
      return Flow::Normal;
    }
    case StmtKind::Macro:
      scope_->set(s.name, make_macro(s, nullptr));
      return Flow::Normal;
    case StmtKind::CallBlock: {
      // The body becomes `caller`, passed to the macro as jinja2 does, as a keyword.
      Value callee = eval(*s.expr->children[0]);
      CallArgs args;
      eval_args(*s.expr, 1, args);
      args.keywords.emplace_back("caller", make_macro(s, &s));
      const std::string text = to_str(call(callee, args));
      check_size(out_->size() + text.size());
      *out_ += text;
      return Flow::Normal;
    }
    case StmtKind::FilterBlock: {
      pending_filter_input_ = Value::from_string(capture(s.body));
      const std::string text = to_str(eval(*s.expr));
      check_size(out_->size() + text.size());
      *out_ += text;
      return Flow::Normal;
    }
    case StmtKind::Break:
      return Flow::Break;
    case StmtKind::Continue:
      return Flow::Continue;
    case StmtKind::Generation:
      return exec_body(s.body);
    case StmtKind::With: {
      // Values are computed in the enclosing scope, then bound in a scope of their own.
      auto scope = std::make_shared<Scope>();
      scope->parent = scope_;
      for (std::size_t i = 0; i < s.params.size(); ++i)
        scope->set(s.params[i], eval(*s.defaults[i]));
      auto saved = scope_;
      scope_ = scope;
      Flow f;
      try {
        f = exec_body(s.body);
      } catch (...) {
        scope_ = saved;
        throw;
      }
      scope_ = saved;
      return f;
    }
  }
  return Flow::Normal;
}

void Runtime::assign(const std::vector<std::string>& targets, bool tuple, Value value) {
  if (targets.size() == 1 && !tuple) {
    scope_->set(targets[0], std::move(value));
    return;
  }
  std::vector<Value> items = iterate(value);
  if (items.size() != targets.size()) {
    if (items.size() > targets.size())
      fail("too many values to unpack (expected ", targets.size(), ")");
    fail("not enough values to unpack (expected ", targets.size(), ", got ", items.size(), ")");
  }
  for (std::size_t i = 0; i < targets.size(); ++i) scope_->set(targets[i], std::move(items[i]));
}

void Runtime::exec_set(const Stmt& s, Value value) {
  if (s.namespace_target) {
    Value ns = lookup(s.targets[0]);
    if (ns.kind != Kind::Namespace) fail("cannot assign attribute on non-namespace object");
    // transformers' namespace refuses underscore names, which could reach Python internals.
    if (!s.name.empty() && s.name[0] == '_') {
      fail("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '",
           s.name, "'. Please rename the attribute.");
    }
    ns.dict->set(Value::from_string(s.name), std::move(value));
    return;
  }
  assign(s.targets, s.tuple_target, std::move(value));
}

Flow Runtime::exec_for(const Stmt& s) {
  std::vector<Value> items = iterate(eval(*s.expr));
  if (s.cond) {
    std::vector<Value> kept;
    auto saved = scope_;
    for (auto& item : items) {
      step();
      scope_ = std::make_shared<Scope>();
      scope_->parent = saved;
      try {
        assign(s.targets, s.tuple_target, item);
        if (truthy(eval(*s.cond))) kept.push_back(std::move(item));
      } catch (...) {
        scope_ = saved;
        throw;
      }
    }
    scope_ = saved;
    items = std::move(kept);
  }
  const auto n = static_cast<std::int64_t>(items.size());
  auto saved = scope_;
  Flow result = Flow::Normal;
  try {
    for (std::int64_t i = 0; i < n; ++i) {
      step();
      scope_ = std::make_shared<Scope>();
      scope_->parent = saved;
      assign(s.targets, s.tuple_target, items[static_cast<std::size_t>(i)]);
      Value loop = Value::new_dict();
      auto& d = *loop.dict;
      d.set(Value::from_string("index"), Value::from_int(i + 1));
      d.set(Value::from_string("index0"), Value::from_int(i));
      d.set(Value::from_string("revindex"), Value::from_int(n - i));
      d.set(Value::from_string("revindex0"), Value::from_int(n - i - 1));
      d.set(Value::from_string("first"), Value::from_bool(i == 0));
      d.set(Value::from_string("last"), Value::from_bool(i == n - 1));
      d.set(Value::from_string("length"), Value::from_int(n));
      d.set(Value::from_string("depth"), Value::from_int(1));
      d.set(Value::from_string("depth0"), Value::from_int(0));
      d.set(Value::from_string("previtem"), i > 0 ? items[static_cast<std::size_t>(i - 1)]
                                                  : Value::undefined("there is no previous item"));
      d.set(Value::from_string("nextitem"), i + 1 < n ? items[static_cast<std::size_t>(i + 1)]
                                                      : Value::undefined("there is no next item"));
      d.set(Value::from_string("cycle"),
            Value::from_callable("cycle", [i](Runtime&, CallArgs& args) {
              if (args.positional.empty()) fail("no items for cycling given");
              return args.positional[static_cast<std::size_t>(i) % args.positional.size()];
            }));
      scope_->set("loop", std::move(loop));
      const Flow f = exec_body(s.body);
      if (f == Flow::Break) break;
    }
  } catch (...) {
    scope_ = saved;
    throw;
  }
  scope_ = saved;
  if (n == 0) result = exec_body(s.else_body);
  return result;
}

Value Runtime::make_macro(const Stmt& s, const Stmt* caller_block) {
  std::weak_ptr<Scope> defined_in = scope_;
  const Stmt* def = &s;
  Value macro = Value::from_callable(
      caller_block ? "caller" : s.name, [this, def, defined_in](Runtime&, CallArgs& args) -> Value {
        if (call_depth_ >= options_.max_call_depth) fail("macro calls nest too deeply");
        auto scope = std::make_shared<Scope>();
        scope->parent = defined_in.lock();
        if (!scope->parent) scope->parent = root_;
        const auto& params = def->params;
        std::vector<Value> extra;
        const bool is_caller = def->kind == StmtKind::CallBlock;
        if (!is_caller && !def->uses_varargs && args.positional.size() > params.size()) {
          fail("macro '", def->name, "' takes not more than ", params.size(), " argument(s)");
        }
        for (std::size_t i = 0; i < args.positional.size(); ++i) {
          if (i < params.size()) {
            scope->set(params[i], args.positional[i]);
          } else {
            extra.push_back(args.positional[i]);
          }
        }
        Value kwargs = Value::new_dict();
        for (auto& [k, v] : args.keywords) {
          bool is_param = false;
          for (std::size_t i = 0; i < params.size(); ++i) {
            if (params[i] != k) continue;
            if (i < args.positional.size())
              fail("macro '", def->name, "' got multiple values for argument '", k, "'");
            is_param = true;
          }
          if (is_param || (k == "caller" && (def->uses_caller || is_caller))) {
            scope->set(k, v);
          } else if (!is_caller && !def->uses_kwargs) {
            fail("macro '", def->name, "' takes no keyword argument '", k, "'");
          } else {
            kwargs.dict->set(Value::from_string(k), v);
          }
        }
        auto saved_scope = scope_;
        std::string* saved_out = out_;
        std::string buffer;
        scope_ = scope;
        ++call_depth_;
        try {
          for (std::size_t i = 0; i < params.size(); ++i) {
            if (scope->find_local(params[i])) continue;
            if (i < def->defaults.size() && def->defaults[i]) {
              scope->set(params[i], eval(*def->defaults[i]));
            } else {
              scope->set(params[i], Value::undefined(std::string("parameter '") + params[i] +
                                                     "' was not provided"));
            }
          }
          scope->set("varargs", Value::from_list(std::move(extra), true));
          scope->set("kwargs", std::move(kwargs));
          out_ = &buffer;
          exec_body(def->body);
        } catch (...) {
          --call_depth_;
          scope_ = saved_scope;
          out_ = saved_out;
          throw;
        }
        --call_depth_;
        scope_ = saved_scope;
        out_ = saved_out;
        return Value::from_string(std::move(buffer));
      });
  macro.callable->is_macro = true;
  return macro;
}

Value Runtime::lookup(const std::string& name) {
  for (Scope* s = scope_.get(); s; s = s->parent.get()) {
    if (Value* v = s->find_local(name)) return *v;
  }
  Value g = global_value(name);
  if (!g.is_undefined()) return g;
  return Value::undefined(std::string("'") + name + "' is undefined");
}

Value Runtime::call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined())
    fail(callee.str().empty() ? "undefined value is not callable" : callee.str());
  if (callee.kind != Kind::Callable)
    fail("'", python_type_name(callee), "' object is not callable");
  return callee.callable->fn(*this, args);
}

void Runtime::eval_args(const Expr& e, std::size_t first, CallArgs& args) {
  for (std::size_t i = first; i < e.children.size(); ++i)
    args.positional.push_back(eval(*e.children[i]));
  for (const auto& [k, v] : e.kwargs) args.keywords.emplace_back(k, eval(*v));
}

Value Runtime::eval(const Expr& e) {
  step();
  RecursionGuard guard(*this);
  switch (e.kind) {
    case ExprKind::Const:
      return e.value;
    case ExprKind::Name:
      return lookup(e.name);
    case ExprKind::List:
    case ExprKind::Tuple: {
      std::vector<Value> items;
      items.reserve(e.children.size());
      for (const auto& c : e.children) items.push_back(eval(*c));
      return Value::from_list(std::move(items), e.kind == ExprKind::Tuple);
    }
    case ExprKind::Dict: {
      Value d = Value::new_dict();
      for (std::size_t i = 0; i + 1 < e.children.size(); i += 2) {
        Value k = eval(*e.children[i]);
        if (k.kind == Kind::List && !k.list->tuple) fail("unhashable type: 'list'");
        if (k.kind == Kind::Dict) fail("unhashable type: 'dict'");
        d.dict->set(std::move(k), eval(*e.children[i + 1]));
      }
      return d;
    }
    case ExprKind::Attr: {
      Value obj = eval(*e.children[0]);
      if (obj.is_undefined())
        fail(obj.str().empty() ? "undefined value has no attributes" : obj.str());
      return get_attribute(*this, obj, e.name);
    }
    case ExprKind::Item:
      return eval_item(e);
    case ExprKind::Slice:
      // Only reachable inside a tuple index (`x[1:2, 3]`), which no str, list or dict accepts.
      return Value::undefined("slice objects are not valid keys");
    case ExprKind::Call:
      return eval_call(e);
    case ExprKind::Filter: {
      Value input;
      if (e.children[0]) {
        input = eval(*e.children[0]);
      } else {
        input = pending_filter_input_;
      }
      CallArgs args;
      eval_args(e, 1, args);
      return apply_filter(*this, e.name, input, args);
    }
    case ExprKind::Test: {
      Value input = eval(*e.children[0]);
      CallArgs args;
      eval_args(e, 1, args);
      return Value::from_bool(apply_test(*this, e.name, input, args) != e.negated);
    }
    case ExprKind::Not:
      return Value::from_bool(!truthy(eval(*e.children[0])));
    case ExprKind::Neg:
    case ExprKind::Pos: {
      Value v = eval(*e.children[0]);
      const bool neg = e.kind == ExprKind::Neg;
      if (v.kind == Kind::Int || v.kind == Kind::Bool) {
        const std::int64_t i = as_int(v);
        if (neg && i == INT64_MIN) fail("integer overflow");
        return Value::from_int(neg ? -i : i);
      }
      if (v.kind == Kind::Float) return Value::from_float(neg ? -v.number : v.number);
      if (v.is_undefined()) fail(v.str().empty() ? "undefined value" : v.str());
      fail("bad operand type for unary ", neg ? "-" : "+", ": '", python_type_name(v), "'");
    }
    case ExprKind::And: {
      Value a = eval(*e.children[0]);
      return truthy(a) ? eval(*e.children[1]) : a;
    }
    case ExprKind::Or: {
      Value a = eval(*e.children[0]);
      return truthy(a) ? a : eval(*e.children[1]);
    }
    case ExprKind::Binary:
      return eval_binary(e);
    case ExprKind::Compare:
      return eval_compare(e);
    case ExprKind::Cond: {
      if (truthy(eval(*e.children[0]))) return eval(*e.children[1]);
      if (e.children[2]) return eval(*e.children[2]);
      return Value::undefined(
          "the inline if-expression evaluated to false and no else section was defined");
    }
  }
  return Value();
}

Value Runtime::eval_call(const Expr& e) {
  Value callee = eval(*e.children[0]);
  CallArgs args;
  eval_args(e, 1, args);
  return call(callee, args);
}

Value Runtime::eval_item(const Expr& e) {
  Value obj = eval(*e.children[0]);
  const Expr& index = *e.children[1];
  if (obj.is_undefined())
    fail(obj.str().empty() ? "undefined value is not subscriptable" : obj.str());
  if (index.kind != ExprKind::Slice) return get_item(*this, obj, eval(index));
  // Python's slice.indices(): clamp start and stop to the sequence for the step's direction.
  Value parts[3];
  for (int i = 0; i < 3; ++i) {
    if (index.children[static_cast<std::size_t>(i)])
      parts[i] = eval(*index.children[static_cast<std::size_t>(i)]);
  }
  std::int64_t step = 1;
  if (!parts[2].is_undefined() && !parts[2].is_none()) step = to_index(parts[2], "slice indices");
  if (step == 0) fail("slice step cannot be zero");
  std::u32string chars;
  const bool is_str = obj.is_string();
  // jinja2 compiles slices to a plain Python subscript: anything but str, list and tuple fails.
  if (obj.is_list() && obj.list->view != View::None)
    fail("'", python_type_name(obj), "' object is not subscriptable");
  if (is_str) {
    chars = utf8_decode(obj.str());
  } else if (!obj.is_list()) {
    fail("'", python_type_name(obj), "' object is not subscriptable");
  }
  const std::int64_t len = is_str ? static_cast<std::int64_t>(chars.size())
                                  : static_cast<std::int64_t>(obj.list->items.size());
  auto bound = [&](const Value& v, std::int64_t dflt) {
    if (v.is_undefined() || v.is_none()) return dflt;
    std::int64_t x = to_index(v, "slice indices");
    if (x < 0) {
      x += len;
      if (x < 0) x = step < 0 ? -1 : 0;
    } else if (x >= len) {
      x = step < 0 ? len - 1 : len;
    }
    return x;
  };
  const std::int64_t start = bound(parts[0], step < 0 ? len - 1 : 0);
  const std::int64_t stop = bound(parts[1], step < 0 ? -1 : len);
  std::vector<std::size_t> picked;
  for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    picked.push_back(static_cast<std::size_t>(i));
  }
  if (is_str) {
    std::u32string out;
    for (auto i : picked) out.push_back(chars[i]);
    return Value::from_string(utf8_encode(out));
  }
  std::vector<Value> out;
  for (auto i : picked) out.push_back(obj.list->items[i]);
  return Value::from_list(std::move(out), obj.list->tuple);
}

Value Runtime::eval_binary(const Expr& e) {
  const Value a = eval(*e.children[0]);
  const Value b = eval(*e.children[1]);
  const std::string& op = e.name;
  if (op == "~") {
    std::string s = to_str(a);
    const std::string t = to_str(b);
    check_size(s.size() + t.size());
    return Value::from_string(s + t);
  }
  const bool ints = (a.kind == Kind::Int || a.kind == Kind::Bool) &&
                    (b.kind == Kind::Int || b.kind == Kind::Bool);
  const bool nums = a.is_number() && b.is_number();
  if (op == "+") {
    if ((a.markup && b.is_string()) || (b.markup && a.is_string())) {
      // Markup + str escapes the plain side, as markupsafe does.
      std::string joined =
          (a.markup ? a.str() : html_escape(a.str())) + (b.markup ? b.str() : html_escape(b.str()));
      check_size(joined.size());
      Value m = Value::from_string(std::move(joined));
      m.markup = true;
      return m;
    }
    if (ints) return Value::from_int(int_add(as_int(a), as_int(b)));
    if (nums) return Value::from_float(a.as_double() + b.as_double());
    if (a.is_string() && b.is_string()) {
      check_size(a.str().size() + b.str().size());
      return Value::from_string(a.str() + b.str());
    }
    if (a.is_list() && b.is_list() && a.list->tuple == b.list->tuple) {
      check_size(a.list->items.size() + b.list->items.size());
      std::vector<Value> items = a.list->items;
      items.insert(items.end(), b.list->items.begin(), b.list->items.end());
      return Value::from_list(std::move(items), a.list->tuple);
    }
    if (a.is_string() && !b.is_undefined() && !a.is_undefined()) {
      fail("can only concatenate str (not \"", python_type_name(b), "\") to str");
    }
    bad_operands("+", a, b);
  }
  if (op == "-") {
    if (ints) return Value::from_int(int_sub(as_int(a), as_int(b)));
    if (nums) return Value::from_float(a.as_double() - b.as_double());
    bad_operands("-", a, b);
  }
  if (op == "*") {
    if (ints) return Value::from_int(int_mul(as_int(a), as_int(b)));
    if (nums) return Value::from_float(a.as_double() * b.as_double());
    const Value* seq =
        (a.is_string() || a.is_list()) && (b.kind == Kind::Int || b.kind == Kind::Bool)   ? &a
        : (b.is_string() || b.is_list()) && (a.kind == Kind::Int || a.kind == Kind::Bool) ? &b
                                                                                          : nullptr;
    if (seq && !(seq->is_list() && seq->list->view != View::None)) {
      Value r = repeat(*this, *seq, as_int(seq == &a ? b : a));
      r.markup = seq->markup;
      return r;
    }
    bad_operands("*", a, b);
  }
  if (op == "/") {
    if (!nums) bad_operands("/", a, b);
    if (b.as_double() == 0) fail("division by zero");
    return Value::from_float(a.as_double() / b.as_double());
  }
  if (op == "//" || op == "%") {
    if (op == "%" && a.is_string()) return Value::from_string(percent_format(*this, a.str(), b));
    if (!nums) bad_operands(op, a, b);
    if (b.as_double() == 0)
      fail(op == "//" ? "integer division or modulo by zero" : "integer modulo by zero");
    if (ints) {
      const std::int64_t x = as_int(a), y = as_int(b);
      if (x == INT64_MIN && y == -1) fail("integer overflow");
      std::int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {
        --q;
        m += y;
      }
      return Value::from_int(op == "//" ? q : m);
    }
    const double x = a.as_double(), y = b.as_double();
    if (op == "%") return Value::from_float(python_fmod(x, y));
    // CPython's float floor division, which rounds the quotient of the exact remainder.
    const double mod = std::fmod(x, y);
    double div = (x - mod) / y;
    if (mod != 0 && ((y < 0) != (mod < 0))) div -= 1.0;
    double floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
    return Value::from_float(floordiv);
  }
  if (op == "**") {
    if (!nums) bad_operands("**", a, b);
    if (ints && as_int(b) >= 0) {
      std::int64_t base = as_int(a), exp = as_int(b), acc = 1;
      while (exp > 0) {
        step();
        if (exp & 1) acc = int_mul(acc, base);
        exp >>= 1;
        if (exp > 0) base = int_mul(base, base);
      }
      return Value::from_int(acc);
    }
    if (a.as_double() == 0 && b.as_double() < 0) fail("0.0 cannot be raised to a negative power");
    return Value::from_float(std::pow(a.as_double(), b.as_double()));
  }
  fail("unknown operator ", op);
}

Value Runtime::eval_compare(const Expr& e) {
  Value left = eval(*e.children[0]);
  for (std::size_t i = 0; i < e.ops.size(); ++i) {
    Value right = eval(*e.children[i + 1]);
    const std::string& op = e.ops[i];
    bool ok;
    if (op == "==") {
      ok = equals(left, right);
    } else if (op == "!=") {
      ok = !equals(left, right);
    } else if (op == "in") {
      ok = contains(right, left);
    } else if (op == "notin") {
      ok = !contains(right, left);
    } else {
      if (left.is_undefined() || right.is_undefined()) bad_operands(op, left, right);
      const int c = compare(left, right);
      ok = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
    }
    if (!ok) return Value::from_bool(false);
    left = std::move(right);
  }
  return Value::from_bool(true);
}

}  // namespace redhare::jinja
