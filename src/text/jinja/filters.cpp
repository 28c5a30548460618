// jinja2's built-in filters and tests, with transformers' tojson in place of jinja2's.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>

#include "text/jinja/runtime.h"

namespace redhare::jinja {

namespace {

using FilterFn = std::function<Value(Runtime&, const Value&, CallArgs&)>;
using TestFn = std::function<bool(Runtime&, const Value&, CallArgs&)>;

const Value* arg(const CallArgs& a, std::size_t i, std::string_view name) {
  return a.get(i, name);
}
bool arg_bool(const CallArgs& a, std::size_t i, std::string_view name, bool dflt) {
  const Value* v = a.get(i, name);
  return v ? truthy(*v) : dflt;
}

std::int64_t length_of(const Value& v) {
  switch (v.kind) {
    case Kind::String:
      return static_cast<std::int64_t>(utf8_length(v.str()));
    case Kind::List:
      if (is_iterator(v.list->view))
        fail("object of type '", python_type_name(v), "' has no len()");
      return static_cast<std::int64_t>(v.list->items.size());
    case Kind::Dict:
      return static_cast<std::int64_t>(v.dict->entries.size());
    case Kind::Undefined:
      return 0;
    default:
      fail("object of type '", python_type_name(v), "' has no len()");
  }
}

// jinja2's make_attrgetter: a dotted path, each part an item lookup (digits as list indices).
Value attr_path(Runtime& rt, Value v, const Value& attribute) {
  if (!attribute.is_string()) return get_item(rt, v, attribute);
  const std::string& path = attribute.str();
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = path.find('.', start);
    const std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
    // Walking on from an undefined part stays undefined, as jinja2's attribute getter does.
    if (v.is_undefined()) return v;
    v = digits ? get_item(rt, v, Value::from_int(std::stoll(part.substr(0, 18))))
               : get_item(rt, v, Value::from_string(part));
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

// Sort/unique/min/max key: lower-cased strings unless case_sensitive.
Value sort_key(Runtime& rt, const Value& v, const Value* attribute, bool case_sensitive) {
  Value k = attribute && !attribute->is_none() ? attr_path(rt, v, *attribute) : v;
  if (!case_sensitive && k.is_string()) return Value::from_string(py_lower(k.str()));
  return k;
}

std::string json_dumps(const Value& v, const CallArgs& a) {
  a.check("tojson", 5, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonDumpOptions o;
  o.ensure_ascii = arg_bool(a, 0, "ensure_ascii", false);
  const Value* indent = arg(a, 1, "indent");
  if (indent && !indent->is_none()) {
    if (indent->is_string()) {
      o.indent_text = indent->str();
    } else {
      const std::int64_t n = to_index(*indent, "indent");
      o.indent_text =
          std::string(static_cast<std::size_t>(std::clamp<std::int64_t>(n, 0, 64)), ' ');
    }
    o.indent = 0;
    o.item_separator = ",";
  }
  const Value* seps = arg(a, 2, "separators");
  if (seps && !seps->is_none()) {
    std::vector<Value> parts = iterate(*seps);
    if (parts.size() != 2 || !parts[0].is_string() || !parts[1].is_string()) {
      fail("separators must be a pair of strings");
    }
    o.item_separator = parts[0].str();
    o.key_separator = parts[1].str();
  }
  o.sort_keys = arg_bool(a, 3, "sort_keys", false);
  return to_json(v, o);
}

// Python's round(x, n) is correctly rounded from the exact binary value, ties to even; printf's
// %.*f rounds the same way.
Value round_float(double x, std::int64_t precision) {
  if (!std::isfinite(x)) return Value::from_float(x);
  if (precision < 0) {
    const double scale = std::pow(10.0, static_cast<double>(-precision));
    return Value::from_float(std::nearbyint(x / scale) * scale);
  }
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::min<std::int64_t>(precision, 300)),
                x);
  return Value::from_float(std::strtod(buf, nullptr));
}

std::string indent_text(const std::string& input, const Value* width, bool first, bool blank) {
  std::string pad = "    ";
  if (width)
    pad = width->is_string() ? width->str()
                             : std::string(static_cast<std::size_t>(std::clamp<std::int64_t>(
                                               to_index(*width, "width"), 0, 1024)),
                                           ' ');
  // jinja2 appends a newline before splitlines(), which drops one trailing empty line.
  const std::string s = input + "\n";
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c != '\n' && c != '\r' && c != '\v' && c != '\f' && !(c >= 0x1c && c <= 0x1e)) continue;
    lines.push_back(s.substr(start, i - start));
    if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
    start = i + 1;
  }
  if (start < s.size()) lines.push_back(s.substr(start));
  std::string rv;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (i) rv += "\n";
    if (i && (blank || !lines[i].empty())) rv += pad;
    rv += lines[i];
  }
  if (first) rv = pad + rv;
  return rv;
}

std::vector<Value> select_items(Runtime& rt, const Value& seq, CallArgs& a, bool by_attr,
                                bool keep) {
  std::size_t next = 0;
  Value attribute;
  if (by_attr) {
    if (a.positional.empty()) fail("Missing parameter for attribute name");
    attribute = a.positional[next++];
  }
  std::string test;
  if (next < a.positional.size()) {
    if (!a.positional[next].is_string()) fail("test name must be a string");
    test = a.positional[next++].str();
    if (!has_test(test)) fail("No test named '", test, "'.");
  }
  CallArgs test_args;
  test_args.positional.assign(a.positional.begin() + static_cast<std::ptrdiff_t>(next),
                              a.positional.end());
  test_args.keywords = a.keywords;
  std::vector<Value> out;
  if (!truthy(seq)) return out;
  for (const Value& item : iterate(seq)) {
    rt.step();
    const Value subject = by_attr ? attr_path(rt, item, attribute) : item;
    const bool ok = test.empty() ? truthy(subject) : apply_test(rt, test, subject, test_args);
    if (ok == keep) out.push_back(item);
  }
  return out;
}

Value min_max(Runtime& rt, const Value& seq, CallArgs& a, bool want_max) {
  a.check(want_max ? "max" : "min", 2, {"case_sensitive", "attribute"});
  const bool cs = arg_bool(a, 0, "case_sensitive", false);
  const Value* attribute = arg(a, 1, "attribute");
  std::vector<Value> items = iterate(seq);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  std::size_t best = 0;
  Value best_key = sort_key(rt, items[0], attribute, cs);
  for (std::size_t i = 1; i < items.size(); ++i) {
    Value k = sort_key(rt, items[i], attribute, cs);
    const int c = compare(k, best_key);
    if (want_max ? c > 0 : c < 0) {
      best = i;
      best_key = std::move(k);
    }
  }
  return items[best];
}

const std::map<std::string_view, FilterFn>& filters() {
  static const std::map<std::string_view, FilterFn> table = [] {
    std::map<std::string_view, FilterFn> t;
    t["tojson"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      std::string s = json_dumps(v, a);
      rt.check_size(s.size());
      return Value::from_string(std::move(s));
    };
    t["trim"] = [](Runtime&, const Value& v, CallArgs& a) {
      a.check("trim", 1, {"chars"});
      return Value::from_string(py_strip(to_str(v), arg(a, 0, "chars"), true, true));
    };
    t["length"] = [](Runtime&, const Value& v, CallArgs&) { return Value::from_int(length_of(v)); };
    t["count"] = t["length"];
    t["join"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      a.check("join", 2, {"d", "attribute"});
      const Value* d = arg(a, 0, "d");
      const std::string sep = d ? to_str(*d) : "";
      const Value* attribute = arg(a, 1, "attribute");
      std::string out;
      bool first = true;
      for (const Value& item : iterate(v)) {
        if (!first) out += sep;
        first = false;
        out += to_str(attribute && !attribute->is_none() ? attr_path(rt, item, *attribute) : item);
        rt.check_size(out.size());
      }
      return Value::from_string(std::move(out));
    };
    t["items"] = [](Runtime&, const Value& v, CallArgs&) {
      if (v.is_undefined()) return Value::make_view({}, View::Generator);
      if (v.kind != Kind::Dict) fail("Can only get item pairs from a mapping.");
      std::vector<Value> out;
      for (const auto& [k, val] : v.dict->entries) out.push_back(Value::from_list({k, val}, true));
      return Value::make_view(std::move(out), View::Generator);
    };
    t["list"] = [](Runtime&, const Value& v, CallArgs&) { return Value::from_list(iterate(v)); };
    t["first"] = [](Runtime&, const Value& v, CallArgs&) {
      std::vector<Value> items = iterate(v);
      return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
    };
    t["last"] = [](Runtime&, const Value& v, CallArgs&) {
      if (v.kind == Kind::Dict || (v.is_list() && v.list->view == View::Generator)) {
        fail("'", python_type_name(v), "' object is not reversible");
      }
      std::vector<Value> items = iterate(v);
      return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
    };
    t["default"] = [](Runtime&, const Value& v, CallArgs& a) {
      a.check("default", 2, {"default_value", "boolean"});
      const Value* d = arg(a, 0, "default_value");
      if (v.is_undefined() || (arg_bool(a, 1, "boolean", false) && !truthy(v))) {
        return d ? *d : Value::from_string("");
      }
      return v;
    };
    t["d"] = t["default"];
    // Markup stays Markup through the case filters, as markupsafe's methods return Markup.
    t["upper"] = [](Runtime&, const Value& v, CallArgs&) {
      Value r = Value::from_string(py_upper(to_str(v)));
      r.markup = v.markup;
      return r;
    };
    t["lower"] = [](Runtime&, const Value& v, CallArgs&) {
      Value r = Value::from_string(py_lower(to_str(v)));
      r.markup = v.markup;
      return r;
    };
    t["title"] = [](Runtime&, const Value& v, CallArgs&) {
      // Not str.title(): jinja2 starts words only after whitespace, '-', and opening brackets.
      std::string s = to_str(v);
      bool start = true;
      for (char& c : s) {
        const bool sep = c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
                         c == '\f' || (c >= 0x1c && c <= 0x1f) || c == '(' || c == '{' ||
                         c == '[' || c == '<';
        if (sep) {
          start = true;
          continue;
        }
        if (start && c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
        if (!start && c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
        start = false;
      }
      return Value::from_string(std::move(s));
    };
    t["capitalize"] = [](Runtime&, const Value& v, CallArgs&) {
      return Value::from_string(py_capitalize(to_str(v)));
    };
    t["replace"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      a.check("replace", 3, {"old", "new", "count"});
      const Value* from = arg(a, 0, "old");
      const Value* to = arg(a, 1, "new");
      if (!from || !to) fail("replace() missing required arguments");
      const Value* count = arg(a, 2, "count");
      return Value::from_string(
          py_replace(rt, to_str(v), to_str(*from), to_str(*to),
                     count && !count->is_none() ? to_index(*count, "count") : -1));
    };
    t["string"] = [](Runtime&, const Value& v, CallArgs&) {
      if (v.markup) return v;
      return Value::from_string(to_str(v));
    };
    t["safe"] = [](Runtime&, const Value& v, CallArgs&) {
      Value m = Value::from_string(to_str(v));
      m.markup = true;
      return m;
    };
    t["int"] = [](Runtime&, const Value& v, CallArgs& a) {
      a.check("int", 2, {"default", "base"});
      const Value* d = arg(a, 0, "default");
      const Value fallback = d ? *d : Value::from_int(0);
      if (v.is_undefined()) fail(v.str().empty() ? "undefined value" : v.str());
      if (v.kind == Kind::Int || v.kind == Kind::Bool)
        return Value::from_int(v.kind == Kind::Bool ? v.boolean : v.integer);
      if (v.kind == Kind::Float) {
        if (!std::isfinite(v.number) || std::fabs(v.number) >= 9.2e18) return fallback;
        return Value::from_int(static_cast<std::int64_t>(v.number));
      }
      if (!v.is_string()) return fallback;
      std::string s = py_strip(v.str(), nullptr, true, true);
      std::string digits;
      for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '_' && i > 0 && i + 1 < s.size() &&
            std::isdigit(static_cast<unsigned char>(s[i - 1])) &&
            std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
          continue;
        }
        digits.push_back(s[i]);
      }
      char* end = nullptr;
      errno = 0;
      const long long n = std::strtoll(digits.c_str(), &end, 10);
      if (!digits.empty() && end && *end == '\0' && errno == 0 &&
          !std::isspace(static_cast<unsigned char>(digits[0]))) {
        return Value::from_int(n);
      }
      const double f = std::strtod(digits.c_str(), &end);
      if (!digits.empty() && end && *end == '\0' && std::isfinite(f) && std::fabs(f) < 9.2e18) {
        return Value::from_int(static_cast<std::int64_t>(f));
      }
      return fallback;
    };
    t["float"] = [](Runtime&, const Value& v, CallArgs& a) {
      a.check("float", 1, {"default"});
      const Value* d = arg(a, 0, "default");
      const Value fallback = d ? *d : Value::from_float(0.0);
      if (v.is_undefined()) fail(v.str().empty() ? "undefined value" : v.str());
      if (v.is_number()) return Value::from_float(v.as_double());
      if (!v.is_string()) return fallback;
      const std::string s = py_strip(v.str(), nullptr, true, true);
      char* end = nullptr;
      const double f = std::strtod(s.c_str(), &end);
      if (s.empty() || !end || *end != '\0') return fallback;
      return Value::from_float(f);
    };
    t["abs"] = [](Runtime&, const Value& v, CallArgs&) {
      if (v.kind == Kind::Float) return Value::from_float(std::fabs(v.number));
      if (v.kind == Kind::Int || v.kind == Kind::Bool) {
        const std::int64_t i = v.kind == Kind::Bool ? v.boolean : v.integer;
        if (i == INT64_MIN) fail("integer overflow");
        return Value::from_int(i < 0 ? -i : i);
      }
      fail("bad operand type for abs(): '", python_type_name(v), "'");
    };
    t["round"] = [](Runtime&, const Value& v, CallArgs& a) {
      a.check("round", 2, {"precision", "method"});
      const Value* p = arg(a, 0, "precision");
      const std::int64_t precision = p ? to_index(*p, "precision") : 0;
      const Value* m = arg(a, 1, "method");
      const std::string method = m ? to_str(*m) : "common";
      if (method != "common" && method != "ceil" && method != "floor")
        fail("method must be common, ceil or floor");
      if (!v.is_number()) fail("type ", python_type_name(v), " doesn't define __round__ method");
      if (method == "common") {
        if (v.kind != Kind::Float) {
          const std::int64_t i = v.kind == Kind::Bool ? v.boolean : v.integer;
          if (precision >= 0) return Value::from_int(i);
          if (precision < -18) return Value::from_int(0);
          // Python rounds an int to a negative number of digits exactly, ties to even.
          std::int64_t scale = 1;
          for (std::int64_t k = 0; k < -precision; ++k) scale *= 10;
          std::int64_t q = i / scale, r = i % scale;
          if (r < 0) {
            r += scale;
            --q;
          }
          if (r > scale - r || (r == scale - r && (q & 1))) ++q;
          std::int64_t out;
          if (__builtin_mul_overflow(q, scale, &out)) fail("integer overflow");
          return Value::from_int(out);
        }
        return round_float(v.number, precision);
      }
      const double scale = std::pow(10.0, static_cast<double>(precision));
      const double x = v.as_double() * scale;
      return Value::from_float((method == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
    };
    t["map"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      std::vector<Value> out;
      // jinja2 maps nothing over a falsy input (None included) rather than failing.
      if (!truthy(v)) return Value::make_view({}, View::Generator);
      const Value* attribute = nullptr;
      const Value* dflt = nullptr;
      for (const auto& [k, val] : a.keywords) {
        if (k == "attribute") {
          attribute = &val;
        } else if (k == "default") {
          dflt = &val;
        } else if (a.positional.empty()) {
          fail("Unexpected keyword argument '", k, "'");
        }
      }
      if (attribute) {
        for (const Value& item : iterate(v)) {
          Value r = attr_path(rt, item, *attribute);
          out.push_back(r.is_undefined() && dflt ? *dflt : r);
        }
        return Value::make_view(std::move(out), View::Generator);
      }
      if (a.positional.empty() || !a.positional[0].is_string())
        fail("map requires a filter argument");
      const std::string name = a.positional[0].str();
      if (!has_filter(name)) fail("No filter named '", name, "'.");
      CallArgs rest;
      rest.positional.assign(a.positional.begin() + 1, a.positional.end());
      rest.keywords = a.keywords;
      for (const Value& item : iterate(v)) {
        rt.step();
        CallArgs copy = rest;
        out.push_back(apply_filter(rt, name, item, copy));
      }
      return Value::make_view(std::move(out), View::Generator);
    };
    t["select"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      return Value::make_view(select_items(rt, v, a, false, true), View::Generator);
    };
    t["reject"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      return Value::make_view(select_items(rt, v, a, false, false), View::Generator);
    };
    t["selectattr"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      return Value::make_view(select_items(rt, v, a, true, true), View::Generator);
    };
    t["rejectattr"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      return Value::make_view(select_items(rt, v, a, true, false), View::Generator);
    };
    t["sort"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      a.check("sort", 3, {"reverse", "case_sensitive", "attribute"});
      const bool reverse = arg_bool(a, 0, "reverse", false);
      const bool cs = arg_bool(a, 1, "case_sensitive", false);
      const Value* attribute = arg(a, 2, "attribute");
      std::vector<std::pair<Value, Value>> keyed;
      for (const Value& item : iterate(v))
        keyed.emplace_back(sort_key(rt, item, attribute, cs), item);
      std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
        rt.step();
        return reverse ? compare(y.first, x.first) < 0 : compare(x.first, y.first) < 0;
      });
      std::vector<Value> out;
      for (auto& [k, item] : keyed) out.push_back(std::move(item));
      return Value::from_list(std::move(out));
    };
    t["dictsort"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      a.check("dictsort", 3, {"case_sensitive", "by", "reverse"});
      if (v.kind != Kind::Dict) fail("dictsort requires a mapping");
      const bool cs = arg_bool(a, 0, "case_sensitive", false);
      const Value* by = arg(a, 1, "by");
      const std::string by_s = by ? to_str(*by) : "key";
      if (by_s != "key" && by_s != "value")
        fail("You can only sort by either \"key\" or \"value\"");
      const bool reverse = arg_bool(a, 2, "reverse", false);
      std::vector<std::pair<Value, Value>> keyed;
      for (const auto& [k, val] : v.dict->entries) {
        keyed.emplace_back(sort_key(rt, by_s == "key" ? k : val, nullptr, cs),
                           Value::from_list({k, val}, true));
      }
      std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
        rt.step();
        return reverse ? compare(y.first, x.first) < 0 : compare(x.first, y.first) < 0;
      });
      std::vector<Value> out;
      for (auto& [k, item] : keyed) out.push_back(std::move(item));
      return Value::from_list(std::move(out));
    };
    t["unique"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      a.check("unique", 2, {"case_sensitive", "attribute"});
      const bool cs = arg_bool(a, 0, "case_sensitive", false);
      const Value* attribute = arg(a, 1, "attribute");
      std::vector<Value> seen, out;
      for (const Value& item : iterate(v)) {
        Value k = sort_key(rt, item, attribute, cs);
        bool dup = false;
        for (const Value& s : seen) {
          rt.step();
          if (equals(s, k)) dup = true;
        }
        if (dup) continue;
        seen.push_back(std::move(k));
        out.push_back(item);
      }
      return Value::make_view(std::move(out), View::Generator);
    };
    t["reverse"] = [](Runtime&, const Value& v, CallArgs&) {
      if (v.is_string()) {
        std::u32string cps = utf8_decode(v.str());
        std::reverse(cps.begin(), cps.end());
        return Value::from_string(utf8_encode(cps));
      }
      std::vector<Value> items = iterate(v);
      std::reverse(items.begin(), items.end());
      // reversed() of a list is an iterator; anything else jinja2 copies into a reversed list.
      if (v.is_list() && v.list->view == View::None)
        return Value::make_view(std::move(items), View::ReverseIterator);
      return Value::from_list(std::move(items));
    };
    t["batch"] = [](Runtime&, const Value& v, CallArgs& a) {
      a.check("batch", 2, {"linecount", "fill_with"});
      const Value* n = arg(a, 0, "linecount");
      if (!n) fail("batch() missing required argument 'linecount'");
      const std::int64_t size = to_index(*n, "linecount");
      if (size <= 0) fail("batch size must be positive");
      const Value* fill = arg(a, 1, "fill_with");
      std::vector<Value> out, cur;
      for (const Value& item : iterate(v)) {
        cur.push_back(item);
        if (static_cast<std::int64_t>(cur.size()) == size) {
          out.push_back(Value::from_list(std::move(cur)));
          cur.clear();
        }
      }
      if (!cur.empty()) {
        if (fill && !fill->is_none()) {
          while (static_cast<std::int64_t>(cur.size()) < size) cur.push_back(*fill);
        }
        out.push_back(Value::from_list(std::move(cur)));
      }
      return Value::make_view(std::move(out), View::Generator);
    };
    t["indent"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      a.check("indent", 3, {"width", "first", "blank"});
      std::string s = indent_text(to_str(v), arg(a, 0, "width"), arg_bool(a, 1, "first", false),
                                  arg_bool(a, 2, "blank", false));
      rt.check_size(s.size());
      return Value::from_string(std::move(s));
    };
    t["escape"] = [](Runtime&, const Value& v, CallArgs&) {
      if (v.markup) return v;
      Value m = Value::from_string(html_escape(to_str(v)));
      m.markup = true;
      return m;
    };
    t["e"] = t["escape"];
    t["wordcount"] = [](Runtime&, const Value& v, CallArgs&) {
      std::int64_t n = 0;
      bool in_word = false;
      for (char c : to_str(v)) {
        const auto u = static_cast<unsigned char>(c);
        const bool word = std::isalnum(u) || c == '_' || u >= 0x80;
        if (word && !in_word) ++n;
        in_word = word;
      }
      return Value::from_int(n);
    };
    t["sum"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      a.check("sum", 2, {"attribute", "start"});
      const Value* attribute = arg(a, 0, "attribute");
      const Value* start = arg(a, 1, "start");
      Value total = start ? *start : Value::from_int(0);
      for (const Value& item : iterate(v)) {
        const Value x = attribute && !attribute->is_none() ? attr_path(rt, item, *attribute) : item;
        if (!x.is_number() || !total.is_number()) {
          fail("unsupported operand type(s) for +: '", python_type_name(total), "' and '",
               python_type_name(x), "'");
        }
        if (total.kind != Kind::Float && x.kind != Kind::Float) {
          std::int64_t r;
          if (__builtin_add_overflow(total.kind == Kind::Bool ? total.boolean : total.integer,
                                     x.kind == Kind::Bool ? x.boolean : x.integer, &r)) {
            fail("integer overflow");
          }
          total = Value::from_int(r);
        } else {
          total = Value::from_float(total.as_double() + x.as_double());
        }
      }
      return total;
    };
    t["min"] = [](Runtime& rt, const Value& v, CallArgs& a) { return min_max(rt, v, a, false); };
    t["max"] = [](Runtime& rt, const Value& v, CallArgs& a) { return min_max(rt, v, a, true); };
    t["center"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      a.check("center", 1, {"width"});
      const Value* w = arg(a, 0, "width");
      const std::int64_t width = std::min<std::int64_t>(w ? to_index(*w, "width") : 80, 1 << 20);
      const std::string s = to_str(v);
      const auto len = static_cast<std::int64_t>(utf8_length(s));
      if (width <= len) return Value::from_string(s);
      // CPython's centering puts the odd space on the left when the width is odd.
      const std::int64_t total = width - len;
      const std::int64_t left = total / 2 + (total & width & 1);
      rt.check_size(static_cast<std::size_t>(width) + s.size());
      return Value::from_string(std::string(static_cast<std::size_t>(left), ' ') + s +
                                std::string(static_cast<std::size_t>(total - left), ' '));
    };
    t["format"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      if (!a.keywords.empty()) fail("format filter with keyword arguments is not supported");
      return Value::from_string(
          percent_format(rt, to_str(v), Value::from_list(a.positional, true)));
    };
    t["attr"] = [](Runtime& rt, const Value& v, CallArgs& a) {
      a.check("attr", 1, {"name"});
      const Value* n = arg(a, 0, "name");
      if (!n || !n->is_string()) fail("attr() requires an attribute name");
      if (v.kind == Kind::Dict)
        return Value::undefined(std::string("'dict object' has no attribute '") + n->str() + "'");
      return get_attribute(rt, v, n->str());
    };
    return t;
  }();
  return table;
}

bool is_int(const Value& v) {
  return v.kind == Kind::Int;
}

const std::map<std::string_view, TestFn>& tests() {
  static const std::map<std::string_view, TestFn> table = [] {
    std::map<std::string_view, TestFn> t;
    auto one = [](const CallArgs& a, const char* name) -> const Value& {
      if (a.positional.empty()) fail(name, "() missing 1 required positional argument");
      return a.positional[0];
    };
    t["defined"] = [](Runtime&, const Value& v, CallArgs&) { return !v.is_undefined(); };
    t["undefined"] = [](Runtime&, const Value& v, CallArgs&) { return v.is_undefined(); };
    t["none"] = [](Runtime&, const Value& v, CallArgs&) { return v.is_none(); };
    t["boolean"] = [](Runtime&, const Value& v, CallArgs&) { return v.kind == Kind::Bool; };
    t["true"] = [](Runtime&, const Value& v, CallArgs&) {
      return v.kind == Kind::Bool && v.boolean;
    };
    t["false"] = [](Runtime&, const Value& v, CallArgs&) {
      return v.kind == Kind::Bool && !v.boolean;
    };
    t["integer"] = [](Runtime&, const Value& v, CallArgs&) { return is_int(v); };
    t["float"] = [](Runtime&, const Value& v, CallArgs&) { return v.kind == Kind::Float; };
    t["number"] = [](Runtime&, const Value& v, CallArgs&) { return v.is_number(); };
    t["string"] = [](Runtime&, const Value& v, CallArgs&) { return v.is_string(); };
    t["mapping"] = [](Runtime&, const Value& v, CallArgs&) { return v.kind == Kind::Dict; };
    t["iterable"] = [](Runtime&, const Value& v, CallArgs&) {
      return v.is_string() || v.is_list() || v.kind == Kind::Dict || v.is_undefined();
    };
    t["sequence"] = [](Runtime&, const Value& v, CallArgs&) {
      return v.is_string() || (v.is_list() && v.list->view == View::None) || v.kind == Kind::Dict ||
             v.is_undefined();
    };
    t["callable"] = [](Runtime&, const Value& v, CallArgs&) { return v.kind == Kind::Callable; };
    t["odd"] = [](Runtime&, const Value& v, CallArgs&) {
      if (!is_int(v) && v.kind != Kind::Bool) fail("odd test requires an integer");
      return ((v.kind == Kind::Bool ? v.boolean : v.integer) & 1) != 0;
    };
    t["even"] = [](Runtime&, const Value& v, CallArgs&) {
      if (!is_int(v) && v.kind != Kind::Bool) fail("even test requires an integer");
      return ((v.kind == Kind::Bool ? v.boolean : v.integer) & 1) == 0;
    };
    t["divisibleby"] = [one](Runtime&, const Value& v, CallArgs& a) {
      const Value& n = one(a, "divisibleby");
      if (!v.is_number() || !n.is_number()) fail("divisibleby requires numbers");
      if (n.as_double() == 0) fail("integer division or modulo by zero");
      if (v.kind != Kind::Float && n.kind != Kind::Float)
        return to_index(v, "value") % to_index(n, "num") == 0;
      return std::fmod(v.as_double(), n.as_double()) == 0;
    };
    t["eq"] = [one](Runtime&, const Value& v, CallArgs& a) { return equals(v, one(a, "eq")); };
    t["equalto"] = t["eq"];
    t["=="] = t["eq"];
    t["ne"] = [one](Runtime&, const Value& v, CallArgs& a) { return !equals(v, one(a, "ne")); };
    t["!="] = t["ne"];
    t["lt"] = [one](Runtime&, const Value& v, CallArgs& a) { return compare(v, one(a, "lt")) < 0; };
    t["lessthan"] = t["lt"];
    t["<"] = t["lt"];
    t["le"] = [one](Runtime&, const Value& v, CallArgs& a) {
      return compare(v, one(a, "le")) <= 0;
    };
    t["<="] = t["le"];
    t["gt"] = [one](Runtime&, const Value& v, CallArgs& a) { return compare(v, one(a, "gt")) > 0; };
    t["greaterthan"] = t["gt"];
    t[">"] = t["gt"];
    t["ge"] = [one](Runtime&, const Value& v, CallArgs& a) {
      return compare(v, one(a, "ge")) >= 0;
    };
    t[">="] = t["ge"];
    t["in"] = [one](Runtime&, const Value& v, CallArgs& a) {
      const Value& seq = one(a, "in");
      if (seq.is_string()) {
        if (!v.is_string()) fail("'in <string>' requires string as left operand");
        return seq.str().find(v.str()) != std::string::npos;
      }
      if (seq.kind == Kind::Dict) return seq.dict->find(v) != nullptr;
      for (const Value& item : iterate(seq)) {
        if (equals(item, v)) return true;
      }
      return false;
    };
    t["sameas"] = [one](Runtime&, const Value& v, CallArgs& a) {
      const Value& o = one(a, "sameas");
      if (v.kind != o.kind) return false;
      switch (v.kind) {
        case Kind::None:
        case Kind::Undefined:
          return true;
        case Kind::Bool:
          return v.boolean == o.boolean;
        case Kind::Int:
          return v.integer == o.integer && v.integer >= -5 && v.integer <= 256;
        case Kind::String:
          return v.text == o.text;
        case Kind::List:
          return v.list == o.list;
        case Kind::Dict:
        case Kind::Namespace:
          return v.dict == o.dict;
        case Kind::Callable:
          return v.callable == o.callable;
        default:
          return false;
      }
    };
    t["lower"] = [](Runtime&, const Value& v, CallArgs&) {
      return v.is_string() && py_lower(v.str()) == v.str();
    };
    t["upper"] = [](Runtime&, const Value& v, CallArgs&) {
      return v.is_string() && py_upper(v.str()) == v.str();
    };
    t["escaped"] = [](Runtime&, const Value&, CallArgs&) { return false; };
    t["filter"] = [](Runtime&, const Value& v, CallArgs&) {
      return v.is_string() && has_filter(v.str());
    };
    t["test"] = [](Runtime&, const Value& v, CallArgs&) {
      return v.is_string() && has_test(v.str());
    };
    return t;
  }();
  return table;
}

}  // namespace

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

bool has_filter(std::string_view name) {
  return filters().count(name) > 0;
}
bool has_test(std::string_view name) {
  return tests().count(name) > 0;
}

Value apply_filter(Runtime& rt, std::string_view name, const Value& input, CallArgs& args) {
  auto it = filters().find(name);
  if (it == filters().end()) fail("No filter named '", name, "'.");
  // Most filters read their input as a string or sequence; an undefined input is fine for those
  // (it reads as empty), as with jinja2's default Undefined.
  return it->second(rt, input, args);
}

bool apply_test(Runtime& rt, std::string_view name, const Value& input, CallArgs& args) {
  auto it = tests().find(name);
  if (it == tests().end()) fail("No test named '", name, "'.");
  static const std::string_view kNoArguments[] = {
      "defined", "undefined", "none",   "boolean", "true",     "false",    "integer",
      "float",   "number",    "string", "mapping", "iterable", "sequence", "callable",
      "odd",     "even",      "lower",  "upper",   "escaped"};
  if (!args.positional.empty() || !args.keywords.empty()) {
    for (auto n : kNoArguments) {
      if (n == name) fail("test_", name, "() takes 1 positional argument but more were given");
    }
  }
  return it->second(rt, input, args);
}

}  // namespace redhare::jinja
