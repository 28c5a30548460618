// The values a chat template computes with, and the Python semantics jinja2 gives them.
//
// jinja2 evaluates templates with Python objects, and what a template prints is Python's str() of
// them: True/False/None, floats in repr form, lists and dicts as Python would write them. Matching
// jinja2 byte for byte therefore means carrying Python's types (int vs float vs bool, tuple vs
// list, insertion-ordered dicts) rather than JSON's.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace redhare::jinja {

enum class Kind : std::uint8_t {
  Undefined,
  None,
  Bool,
  Int,
  Float,
  String,
  List,  // also tuples: ListData::tuple
  Dict,
  Namespace,  // jinja2's namespace(): a dict whose entries are read and set as attributes
  Callable,   // macros, globals, bound methods
};

// Python objects that iterate like lists but are not lists: dict views (sized, printed as
// dict_items([...])) and the generators jinja2's map/select/... filters return (always truthy,
// no len(), not JSON-serializable). Templates that forget `|list` behave differently on them.
enum class View : std::uint8_t {
  None,
  DictItems,
  DictKeys,
  DictValues,
  Generator,
  ReverseIterator
};
const char* view_type_name(View v);
inline bool is_iterator(View v) {
  return v == View::Generator || v == View::ReverseIterator;
}

struct Value;
struct ListData;
struct DictData;
struct Callable;

class Runtime;

struct Value {
  Kind kind = Kind::Undefined;
  bool boolean = false;
  bool markup = false;  // a String marked safe (|safe, |escape): `+` escapes what joins it
  std::int64_t integer = 0;
  double number = 0;
  // The text of a String; for Undefined, the message jinja2 would raise when it is used.
  std::shared_ptr<const std::string> text;
  std::shared_ptr<ListData> list;
  std::shared_ptr<DictData> dict;  // Dict and Namespace
  std::shared_ptr<Callable> callable;

  static Value undefined(std::string hint = {});
  static Value none();
  static Value from_bool(bool b);
  static Value from_int(std::int64_t i);
  static Value from_float(double f);
  static Value from_string(std::string s);
  static Value from_list(std::vector<Value> items, bool tuple = false);
  static Value make_view(std::vector<Value> items, View view);
  static Value new_dict();
  static Value new_namespace();
  static Value from_callable(std::string name, std::function<Value(Runtime&, struct CallArgs&)> fn);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_list() const { return kind == Kind::List; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  // The text of a String, or an Undefined's message (empty when it has none).
  const std::string& str() const;
  // Numeric value of an Int, Float or Bool (Python's bool is an int).
  double as_double() const;
};

// Containers built while rendering may nest only this deep: printing, comparing and destroying
// them recurse, and a template looping `{% set ns.x = [ns.x] %}` must not exhaust the stack.
inline constexpr int kMaxValueNesting = 256;
int nesting_of(const Value& v);

struct ListData {
  std::vector<Value> items;
  int nesting = 1;
  bool tuple = false;
  View view = View::None;
};

// Insertion-ordered, as Python dicts are. Chat-template dicts are small, so a linear scan is
// the cheapest honest structure; it also keeps iteration order trivially right.
struct DictData {
  std::vector<std::pair<Value, Value>> entries;
  int nesting = 1;

  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;

  // Python-style binding of one parameter: positional slot `index` or keyword `name`.
  // Returns nullptr when absent.
  const Value* get(std::size_t index, std::string_view name) const;
  // Fails when more positionals than `max_positional` or an unknown keyword was passed.
  void check(std::string_view function, std::size_t max_positional,
             std::initializer_list<std::string_view> keyword_names) const;
};

struct Callable {
  std::string name;
  std::function<Value(Runtime&, CallArgs&)> fn;
  bool is_macro = false;
};

// Python's str() and repr().
std::string to_str(const Value& v);
std::string to_repr(const Value& v);
std::string format_float(double f);
std::string python_type_name(const Value& v);
bool truthy(const Value& v);
// Python ==.
bool equals(const Value& a, const Value& b);
// Python <, as -1/0/1; fails with Python's TypeError text for unorderable types.
int compare(const Value& a, const Value& b);

// JSON in (context) and out (the tojson filter, which transformers makes json.dumps).
Value from_json(const nlohmann::ordered_json& j);
struct JsonDumpOptions {
  bool ensure_ascii = false;
  int indent = -1;          // -1: no newlines
  std::string indent_text;  // used when indent >= 0 (Python also accepts a string indent)
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonDumpOptions& opts);

// Code-point view of UTF-8 text, as Python indexes strings. Invalid bytes map to U+DC80+byte
// (Python's surrogateescape) so that decoding and re-encoding is lossless.
std::u32string utf8_decode(std::string_view s);
std::string utf8_encode(std::u32string_view s);
std::size_t utf8_length(std::string_view s);

}  // namespace redhare::jinja
