#include "text/jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "text/unicode.h"

namespace redhare::jinja {

namespace {

// Containers can only nest this deep when printed; a namespace can contain itself, and Python's
// reprlib-style "..." would not match jinja2 anyway, so deep nesting is an error.
constexpr int kMaxPrintDepth = 128;

void check_depth(int depth) {
  if (depth > kMaxPrintDepth) fail("value nests deeper than ", kMaxPrintDepth, " levels");
}

void append_utf8(std::string& out, char32_t c) {
  if (c >= 0xDC80 && c <= 0xDCFF) {  // surrogate-escaped raw byte
    out.push_back(static_cast<char>(c - 0xDC00));
  } else {
    text::utf8_append(out, c);
  }
}

// Python's str.isprintable() for the code points that turn up in practice: controls, the Latin-1
// no-break space and soft hyphen, Unicode spaces and format characters, private use.
bool python_printable(char32_t c) {
  if (c < 0x20 || c == 0x7F) return false;
  if (c >= 0x80 && c <= 0xA0) return false;
  if (c == 0xAD) return false;
  if (c >= 0x2000 && c <= 0x200F) return false;
  if (c >= 0x2028 && c <= 0x202F) return false;
  if (c >= 0x205F && c <= 0x206F) return false;
  if (c == 0x3000 || c == 0xFEFF) return false;
  if (c >= 0xD800 && c <= 0xDFFF) return false;
  if (c >= 0xE000 && c <= 0xF8FF) return false;
  if (c >= 0xFFF9 && c <= 0xFFFB) return false;
  return true;
}

void hex_escape(std::string& out, char32_t c) {
  char buf[16];
  if (c < 0x100) {
    std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
  } else if (c < 0x10000) {
    std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
  } else {
    std::snprintf(buf, sizeof buf, "\\U%08x", static_cast<unsigned>(c));
  }
  out += buf;
}

std::string repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : utf8_decode(s)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!python_printable(c)) {
      hex_escape(out, c);
    } else {
      append_utf8(out, c);
    }
  }
  out.push_back(quote);
  return out;
}

void repr_into(std::string& out, const Value& v, int depth);

void repr_dict_body(std::string& out, const DictData& d, int depth) {
  out.push_back('{');
  bool first = true;
  for (const auto& [k, val] : d.entries) {
    if (!first) out += ", ";
    first = false;
    repr_into(out, k, depth + 1);
    out += ": ";
    repr_into(out, val, depth + 1);
  }
  out.push_back('}');
}

void repr_into(std::string& out, const Value& v, int depth) {
  check_depth(depth);
  switch (v.kind) {
    case Kind::String:
      out += repr_string(v.str());
      return;
    case Kind::Undefined:
      out += "Undefined";
      return;
    case Kind::List: {
      const bool tuple = v.list->tuple;
      if (is_iterator(v.list->view)) {
        out += "<" + std::string(view_type_name(v.list->view)) + " object>";
        return;
      }
      if (v.list->view != View::None) {
        out += view_type_name(v.list->view);
        out.push_back('(');
      }
      out.push_back(tuple ? '(' : '[');
      for (std::size_t i = 0; i < v.list->items.size(); ++i) {
        if (i) out += ", ";
        repr_into(out, v.list->items[i], depth + 1);
      }
      if (tuple && v.list->items.size() == 1) out.push_back(',');
      out.push_back(tuple ? ')' : ']');
      if (v.list->view != View::None) out.push_back(')');
      return;
    }
    case Kind::Dict:
      repr_dict_body(out, *v.dict, depth);
      return;
    case Kind::Namespace:
      out += "<Namespace ";
      repr_dict_body(out, *v.dict, depth);
      out += ">";
      return;
    default:
      out += to_str(v);
  }
}

void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out.push_back('"');
  for (char32_t c : utf8_decode(s)) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default: {
        char buf[16];
        if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
          if (c >= 0x10000) {
            const char32_t v = c - 0x10000;
            std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x",
                          static_cast<unsigned>(0xD800 + (v >> 10)),
                          static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
          } else {
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          }
          out += buf;
        } else {
          append_utf8(out, c);
        }
      }
    }
  }
  out.push_back('"');
}

std::string json_float(double f) {
  if (std::isnan(f)) return "NaN";
  if (std::isinf(f)) return f > 0 ? "Infinity" : "-Infinity";
  return format_float(f);
}

// json.dumps turns non-string keys into strings the way JSON spells the scalar.
std::string json_key(const Value& k) {
  switch (k.kind) {
    case Kind::String:
      return k.str();
    case Kind::Bool:
      return k.boolean ? "true" : "false";
    case Kind::None:
      return "null";
    case Kind::Int:
      return std::to_string(k.integer);
    case Kind::Float:
      return json_float(k.number);
    default:
      fail("keys must be str, int, float, bool or None, not ", python_type_name(k));
  }
}

void newline_indent(std::string& out, const JsonDumpOptions& o, int level) {
  out.push_back('\n');
  for (int i = 0; i < level; ++i) out += o.indent_text;
}

void json_into(std::string& out, const Value& v, const JsonDumpOptions& o, int level) {
  check_depth(level);
  switch (v.kind) {
    case Kind::None:
      out += "null";
      return;
    case Kind::Bool:
      out += v.boolean ? "true" : "false";
      return;
    case Kind::Int:
      out += std::to_string(v.integer);
      return;
    case Kind::Float:
      out += json_float(v.number);
      return;
    case Kind::String:
      json_string(out, v.str(), o.ensure_ascii);
      return;
    case Kind::List: {
      if (v.list->view != View::None) {
        fail("Object of type ", view_type_name(v.list->view), " is not JSON serializable");
      }
      const auto& items = v.list->items;
      if (items.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += o.item_separator;
        if (o.indent >= 0) newline_indent(out, o, level + 1);
        json_into(out, items[i], o, level + 1);
      }
      if (o.indent >= 0) newline_indent(out, o, level);
      out.push_back(']');
      return;
    }
    case Kind::Dict: {
      std::vector<std::pair<std::string, const Value*>> entries;
      for (const auto& [k, val] : v.dict->entries) entries.emplace_back(json_key(k), &val);
      if (entries.empty()) {
        out += "{}";
        return;
      }
      if (o.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
      }
      out.push_back('{');
      for (std::size_t i = 0; i < entries.size(); ++i) {
        if (i) out += o.item_separator;
        if (o.indent >= 0) newline_indent(out, o, level + 1);
        json_string(out, entries[i].first, o.ensure_ascii);
        out += o.key_separator;
        json_into(out, *entries[i].second, o, level + 1);
      }
      if (o.indent >= 0) newline_indent(out, o, level);
      out.push_back('}');
      return;
    }
    default:
      fail("Object of type ", python_type_name(v), " is not JSON serializable");
  }
}

bool list_equals(const ListData& a, const ListData& b) {
  if (a.tuple != b.tuple || a.view != b.view || is_iterator(a.view) ||
      a.items.size() != b.items.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.items.size(); ++i) {
    if (!equals(a.items[i], b.items[i])) return false;
  }
  return true;
}

}  // namespace

Value Value::undefined(std::string hint) {
  Value v;
  v.text = std::make_shared<const std::string>(std::move(hint));
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::from_bool(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.boolean = b;
  return v;
}
Value Value::from_int(std::int64_t i) {
  Value v;
  v.kind = Kind::Int;
  v.integer = i;
  return v;
}
Value Value::from_float(double f) {
  Value v;
  v.kind = Kind::Float;
  v.number = f;
  return v;
}
Value Value::from_string(std::string s) {
  Value v;
  v.kind = Kind::String;
  v.text = std::make_shared<const std::string>(std::move(s));
  return v;
}
const char* view_type_name(View v) {
  switch (v) {
    case View::DictItems:
      return "dict_items";
    case View::DictKeys:
      return "dict_keys";
    case View::DictValues:
      return "dict_values";
    case View::Generator:
      return "generator";
    case View::ReverseIterator:
      return "list_reverseiterator";
    default:
      return "list";
  }
}

Value Value::make_view(std::vector<Value> items, View view) {
  Value v = from_list(std::move(items));
  v.list->view = view;
  return v;
}

int nesting_of(const Value& v) {
  if (v.list) return v.list->nesting;
  if (v.dict) return v.dict->nesting;
  return 0;
}

namespace {
int nested_in(int inner) {
  if (inner + 1 > kMaxValueNesting) fail("value nests deeper than ", kMaxValueNesting, " levels");
  return inner + 1;
}
}  // namespace

Value Value::from_list(std::vector<Value> items, bool tuple) {
  int inner = 0;
  for (const Value& item : items) inner = std::max(inner, nesting_of(item));
  Value v;
  v.kind = Kind::List;
  v.list = std::make_shared<ListData>();
  v.list->items = std::move(items);
  v.list->tuple = tuple;
  v.list->nesting = nested_in(inner);
  return v;
}
Value Value::new_dict() {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::make_shared<DictData>();
  return v;
}
Value Value::new_namespace() {
  Value v = new_dict();
  v.kind = Kind::Namespace;
  return v;
}
Value Value::from_callable(std::string name, std::function<Value(Runtime&, CallArgs&)> fn) {
  Value v;
  v.kind = Kind::Callable;
  v.callable = std::make_shared<Callable>();
  v.callable->name = std::move(name);
  v.callable->fn = std::move(fn);
  return v;
}

const std::string& Value::str() const {
  static const std::string empty;
  return text ? *text : empty;
}

double Value::as_double() const {
  switch (kind) {
    case Kind::Int:
      return static_cast<double>(integer);
    case Kind::Float:
      return number;
    case Kind::Bool:
      return boolean ? 1.0 : 0.0;
    default:
      return 0.0;
  }
}

const Value* DictData::find(const Value& key) const {
  if (key.is_string()) return find(std::string_view(key.str()));
  for (const auto& [k, v] : entries) {
    if (equals(k, key)) return &v;
  }
  return nullptr;
}

const Value* DictData::find(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k.is_string() && k.str() == key) return &v;
  }
  return nullptr;
}

void DictData::set(Value key, Value value) {
  nesting = std::max(nesting, nested_in(std::max(nesting_of(key), nesting_of(value))));
  for (auto& [k, v] : entries) {
    if (equals(k, key)) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

const Value* CallArgs::get(std::size_t index, std::string_view name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [k, v] : keywords) {
    if (k == name) return &v;
  }
  return nullptr;
}

void CallArgs::check(std::string_view function, std::size_t max_positional,
                     std::initializer_list<std::string_view> keyword_names) const {
  if (positional.size() > max_positional) {
    fail(function, "() takes at most ", max_positional, " positional arguments (",
         positional.size(), " given)");
  }
  for (const auto& [k, v] : keywords) {
    if (std::find(keyword_names.begin(), keyword_names.end(), k) == keyword_names.end()) {
      fail(function, "() got an unexpected keyword argument '", k, "'");
    }
  }
}

std::string format_float(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, f, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string out;
  std::size_t pos = 0;
  if (sci[0] == '-') {
    out.push_back('-');
    pos = 1;
  }
  const std::size_t e_pos = sci.find('e');
  std::string digits;
  for (std::size_t i = pos; i < e_pos; ++i) {
    if (sci[i] != '.') digits.push_back(sci[i]);
  }
  const int exp = std::atoi(sci.c_str() + e_pos + 1);
  const int n = static_cast<int>(digits.size());
  // Python's repr switches to exponent form outside [1e-4, 1e16).
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      if (n <= exp + 1) {
        out += digits;
        out.append(static_cast<std::size_t>(exp + 1 - n), '0');
        out += ".0";
      } else {
        out += digits.substr(0, static_cast<std::size_t>(exp + 1));
        out.push_back('.');
        out += digits.substr(static_cast<std::size_t>(exp + 1));
      }
    } else {
      out += "0.";
      out.append(static_cast<std::size_t>(-exp - 1), '0');
      out += digits;
    }
  } else {
    out.push_back(digits[0]);
    if (n > 1) {
      out.push_back('.');
      out += digits.substr(1);
    }
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += ebuf;
  }
  return out;
}

std::string python_type_name(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return "Undefined";
    case Kind::None:
      return "NoneType";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::String:
      return v.markup ? "Markup" : "str";
    case Kind::List:
      if (v.list->view != View::None) return view_type_name(v.list->view);
      return v.list->tuple ? "tuple" : "list";
    case Kind::Dict:
      return "dict";
    case Kind::Namespace:
      return "Namespace";
    case Kind::Callable:
      return v.callable->is_macro ? "Macro" : "function";
  }
  return "object";
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return "";
    case Kind::None:
      return "None";
    case Kind::Bool:
      return v.boolean ? "True" : "False";
    case Kind::Int:
      return std::to_string(v.integer);
    case Kind::Float:
      return format_float(v.number);
    case Kind::String:
      return v.str();
    case Kind::Callable:
      return std::string("<") + python_type_name(v) + " '" + v.callable->name + "'>";
    default: {
      std::string out;
      repr_into(out, v, 0);
      return out;
    }
  }
}

std::string to_repr(const Value& v) {
  std::string out;
  repr_into(out, v, 0);
  return out;
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None:
      return false;
    case Kind::Bool:
      return v.boolean;
    case Kind::Int:
      return v.integer != 0;
    case Kind::Float:
      return v.number != 0.0;
    case Kind::String:
      return !v.str().empty();
    case Kind::List:
      return is_iterator(v.list->view) || !v.list->items.empty();
    case Kind::Dict:
      return !v.dict->entries.empty();
    default:
      return true;
  }
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Kind::Float && b.kind != Kind::Float) {
      const std::int64_t x = a.kind == Kind::Bool ? a.boolean : a.integer;
      const std::int64_t y = b.kind == Kind::Bool ? b.boolean : b.integer;
      return x == y;
    }
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None:
      return true;
    case Kind::String:
      return a.text == b.text || a.str() == b.str();
    case Kind::List:
      return a.list == b.list || list_equals(*a.list, *b.list);
    case Kind::Dict: {
      if (a.dict == b.dict) return true;
      if (a.dict->entries.size() != b.dict->entries.size()) return false;
      for (const auto& [k, v] : a.dict->entries) {
        const Value* other = b.dict->find(k);
        if (!other || !equals(v, *other)) return false;
      }
      return true;
    }
    case Kind::Namespace:
      return a.dict == b.dict;
    case Kind::Callable:
      return a.callable == b.callable;
    default:
      return false;
  }
}

int compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Kind::Float && b.kind != Kind::Float) {
      const std::int64_t x = a.kind == Kind::Bool ? a.boolean : a.integer;
      const std::int64_t y = b.kind == Kind::Bool ? b.boolean : b.integer;
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    const double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    // UTF-8 byte order is code-point order, which is how Python orders str.
    const int c = a.str().compare(b.str());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list() && a.list->tuple == b.list->tuple) {
    const auto& x = a.list->items;
    const auto& y = b.list->items;
    for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equals(x[i], y[i])) continue;
      return compare(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  fail("'<' not supported between instances of '", python_type_name(a), "' and '",
       python_type_name(b), "'");
}

Value from_json(const nlohmann::ordered_json& j) {
  using T = nlohmann::ordered_json::value_t;
  switch (j.type()) {
    case T::null:
      return Value::none();
    case T::boolean:
      return Value::from_bool(j.get<bool>());
    case T::number_integer:
      return Value::from_int(j.get<std::int64_t>());
    case T::number_unsigned: {
      const auto u = j.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX))
        return Value::from_float(static_cast<double>(u));
      return Value::from_int(static_cast<std::int64_t>(u));
    }
    case T::number_float:
      return Value::from_float(j.get<double>());
    case T::string:
      return Value::from_string(j.get<std::string>());
    case T::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return Value::from_list(std::move(items));
    }
    case T::object: {
      Value d = Value::new_dict();
      for (auto it = j.begin(); it != j.end(); ++it) {
        Value item = from_json(it.value());
        d.dict->nesting = std::max(d.dict->nesting, nested_in(nesting_of(item)));
        d.dict->entries.emplace_back(Value::from_string(it.key()), std::move(item));
      }
      return d;
    }
    default:
      fail("template context holds a JSON value of unsupported type ", j.type_name());
  }
}

std::string to_json(const Value& v, const JsonDumpOptions& opts) {
  std::string out;
  json_into(out, v, opts, 0);
  return out;
}

std::u32string utf8_decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    int len = 0;
    char32_t c = 0;
    if (b0 < 0x80) {
      len = 1;
      c = b0;
    } else if ((b0 & 0xE0) == 0xC0) {
      len = 2;
      c = b0 & 0x1F;
    } else if ((b0 & 0xF0) == 0xE0) {
      len = 3;
      c = b0 & 0x0F;
    } else if ((b0 & 0xF8) == 0xF0) {
      len = 4;
      c = b0 & 0x07;
    }
    bool ok = len > 0 && i + static_cast<std::size_t>(len) <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      if ((b & 0xC0) != 0x80) ok = false;
      c = (c << 6) | (b & 0x3F);
    }
    // Reject overlong forms and out-of-range values so every code point re-encodes to the
    // same bytes.
    if (ok && ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
               c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))) {
      ok = false;
    }
    if (!ok) {
      out.push_back(0xDC00 + b0);
      ++i;
    } else {
      out.push_back(c);
      i += static_cast<std::size_t>(len);
    }
  }
  return out;
}

std::string utf8_encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

std::size_t utf8_length(std::string_view s) {
  for (char ch : s) {
    if (static_cast<unsigned char>(ch) >= 0x80) return utf8_decode(s).size();
  }
  return s.size();
}

}  // namespace redhare::jinja
