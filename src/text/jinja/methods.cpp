// Attribute and item access, the Python methods templates call on str, dict and list, and the
// globals transformers provides.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "text/jinja/runtime.h"

namespace redhare::jinja {

namespace {

// Python's str.isspace() set.
bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::string object_type_repr(const Value& v) {
  if (v.is_none()) return "None";
  return python_type_name(v) + " object";
}

Value no_attribute(const Value& obj, const std::string& name) {
  return Value::undefined(std::string("'") + object_type_repr(obj) + "' has no attribute '" + name +
                          "'");
}

Value unsafe(const Value& obj, const std::string& name) {
  return Value::undefined(std::string("access to attribute '") + name + "' of '" +
                          python_type_name(obj) + "' object is unsafe.");
}

const std::string& arg_string(const CallArgs& args, std::size_t i, std::string_view name,
                              const char* fn) {
  const Value* v = args.get(i, name);
  if (!v) fail(fn, "() missing required argument '", name, "'");
  if (!v->is_string()) fail(fn, "() argument must be str, not ", python_type_name(*v));
  return v->str();
}

std::int64_t arg_int(const CallArgs& args, std::size_t i, std::string_view name,
                     std::int64_t dflt) {
  const Value* v = args.get(i, name);
  if (!v || v->is_none()) return dflt;
  return to_index(*v, "argument");
}

// Byte offset of code point `index` (clamped), for find()/count() ranges.
std::size_t byte_offset(const std::string& s, std::int64_t index) {
  const auto len = static_cast<std::int64_t>(utf8_length(s));
  if (index < 0) index = std::max<std::int64_t>(0, index + len);
  if (index >= len) return s.size();
  std::size_t pos = 0;
  for (std::int64_t k = 0; pos < s.size(); ++pos) {
    if ((static_cast<unsigned char>(s[pos]) & 0xC0) != 0x80) {
      if (k == index) return pos;
      ++k;
    }
  }
  return s.size();
}

Value split(Runtime& rt, const std::string& s, const Value* sep, std::int64_t maxsplit,
            bool from_right) {
  std::vector<Value> parts;
  if (!sep || sep->is_none()) {
    // Runs of whitespace separate; leading and trailing whitespace yields no empty parts.
    std::u32string cps = utf8_decode(s);
    std::vector<std::u32string> words;
    if (from_right) std::reverse(cps.begin(), cps.end());
    std::size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && py_isspace(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && static_cast<std::int64_t>(words.size()) == maxsplit) {
        std::size_t end = cps.size();
        while (end > i && py_isspace(cps[end - 1])) --end;
        words.push_back(cps.substr(i, end - i));
        break;
      }
      std::size_t j = i;
      while (j < cps.size() && !py_isspace(cps[j])) ++j;
      words.push_back(cps.substr(i, j - i));
      i = j;
    }
    if (from_right) {
      std::reverse(words.begin(), words.end());
      for (auto& w : words) std::reverse(w.begin(), w.end());
    }
    for (auto& w : words) parts.push_back(Value::from_string(utf8_encode(w)));
    return Value::from_list(std::move(parts));
  }
  if (!sep->is_string()) fail("must be str or None, not ", python_type_name(*sep));
  const std::string& d = sep->str();
  if (d.empty()) fail("empty separator");
  std::vector<std::string> pieces;
  if (!from_right) {
    std::size_t start = 0;
    while (true) {
      rt.step();
      const std::size_t at = (maxsplit >= 0 && static_cast<std::int64_t>(pieces.size()) >= maxsplit)
                                 ? std::string::npos
                                 : s.find(d, start);
      if (at == std::string::npos) {
        pieces.push_back(s.substr(start));
        break;
      }
      pieces.push_back(s.substr(start, at - start));
      start = at + d.size();
    }
  } else {
    std::size_t end = s.size();
    while (true) {
      rt.step();
      std::size_t at = std::string::npos;
      if ((maxsplit < 0 || static_cast<std::int64_t>(pieces.size()) < maxsplit) &&
          end >= d.size()) {
        at = s.rfind(d, end - d.size());
      }
      if (at == std::string::npos) {
        pieces.push_back(s.substr(0, end));
        break;
      }
      pieces.push_back(s.substr(at + d.size(), end - at - d.size()));
      end = at;
    }
    std::reverse(pieces.begin(), pieces.end());
  }
  for (auto& p : pieces) parts.push_back(Value::from_string(std::move(p)));
  return Value::from_list(std::move(parts));
}

bool affix_match(const std::string& s, const Value& affix, bool prefix) {
  auto one = [&](const Value& a) {
    if (!a.is_string())
      fail(prefix ? "startswith" : "endswith", " first arg must be str or a tuple of str");
    const std::string& t = a.str();
    if (t.size() > s.size()) return false;
    return prefix ? s.compare(0, t.size(), t) == 0
                  : s.compare(s.size() - t.size(), t.size(), t) == 0;
  };
  if (affix.is_list() && affix.list->tuple) {
    return std::any_of(affix.list->items.begin(), affix.list->items.end(), one);
  }
  return one(affix);
}

// str.format with automatic or explicit field numbering and keyword fields; format specs other
// than none are refused rather than approximated.
std::string py_format(Runtime& rt, const std::string& fmt, const CallArgs& args) {
  std::string out;
  std::size_t auto_index = 0;
  for (std::size_t i = 0; i < fmt.size(); ++i) {
    const char c = fmt[i];
    if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') {
        out.push_back('}');
        ++i;
        continue;
      }
      fail("Single '}' encountered in format string");
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    const std::size_t close = fmt.find('}', i);
    if (close == std::string::npos) fail("Single '{' encountered in format string");
    std::string field = fmt.substr(i + 1, close - i - 1);
    i = close;
    bool repr = false;
    if (const auto bang = field.find('!'); bang != std::string::npos) {
      const std::string conv = field.substr(bang + 1);
      if (conv != "r" && conv != "s") fail("Unknown conversion specifier ", conv);
      repr = conv == "r";
      field.resize(bang);
    }
    if (field.find(':') != std::string::npos)
      fail("format specifications are not supported in str.format");
    const Value* v = nullptr;
    if (field.empty()) {
      v = auto_index < args.positional.size() ? &args.positional[auto_index] : nullptr;
      if (!v) fail("Replacement index ", auto_index, " out of range for positional args tuple");
      ++auto_index;
    } else if (std::all_of(field.begin(), field.end(),
                           [](char d) { return d >= '0' && d <= '9'; })) {
      const std::size_t idx = std::stoul(field.substr(0, 9));
      if (idx >= args.positional.size())
        fail("Replacement index ", idx, " out of range for positional args tuple");
      v = &args.positional[idx];
    } else {
      for (const auto& [k, val] : args.keywords) {
        if (k == field) v = &val;
      }
      if (!v) fail("KeyError: '", field, "'");
    }
    out += repr ? to_repr(*v) : to_str(*v);
    rt.check_size(out.size());
  }
  return out;
}

Value bound(std::string name, std::function<Value(Runtime&, CallArgs&)> fn) {
  return Value::from_callable(std::move(name), std::move(fn));
}

Value keep_markup(std::string s, bool markup) {
  Value v = Value::from_string(std::move(s));
  v.markup = markup;
  return v;
}

Value string_method(const Value& obj, const std::string& name) {
  const std::string s = obj.str();
  const bool mk = obj.markup;
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    return bound(name, [s, name, mk](Runtime&, CallArgs& a) {
      a.check(name, 1, {"chars"});
      return keep_markup(py_strip(s, a.get(0, "chars"), name != "rstrip", name != "lstrip"), mk);
    });
  }
  if (name == "split" || name == "rsplit") {
    return bound(name, [s, name](Runtime& rt, CallArgs& a) {
      a.check(name, 2, {"sep", "maxsplit"});
      return split(rt, s, a.get(0, "sep"), arg_int(a, 1, "maxsplit", -1), name == "rsplit");
    });
  }
  if (name == "splitlines") {
    return bound(name, [s](Runtime& rt, CallArgs& a) {
      a.check("splitlines", 1, {"keepends"});
      const Value* keep = a.get(0, "keepends");
      const bool keepends = keep && truthy(*keep);
      std::vector<Value> lines;
      std::size_t start = 0;
      for (std::size_t i = 0; i < s.size(); ++i) {
        rt.step();
        const char c = s[i];
        if (c != '\n' && c != '\r' && c != '\v' && c != '\f' && !(c >= 0x1c && c <= 0x1e)) continue;
        std::size_t end = i + 1;
        if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++end;
        lines.push_back(Value::from_string(s.substr(start, (keepends ? end : i) - start)));
        start = end;
        i = end - 1;
      }
      if (start < s.size()) lines.push_back(Value::from_string(s.substr(start)));
      return Value::from_list(std::move(lines));
    });
  }
  if (name == "startswith" || name == "endswith") {
    return bound(name, [s, name](Runtime&, CallArgs& a) {
      a.check(name, 1, {});
      if (a.positional.empty()) fail(name, "() takes at least 1 argument (0 given)");
      return Value::from_bool(affix_match(s, a.positional[0], name == "startswith"));
    });
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    return bound(name, [s, name, mk](Runtime&, CallArgs& a) {
      a.check(name, 0, {});
      if (name == "upper") return keep_markup(py_upper(s), mk);
      if (name == "lower") return keep_markup(py_lower(s), mk);
      if (name == "title") return keep_markup(py_title(s), mk);
      return keep_markup(py_capitalize(s), mk);
    });
  }
  if (name == "replace") {
    return bound(name, [s](Runtime& rt, CallArgs& a) {
      a.check("replace", 3, {"count"});
      return Value::from_string(py_replace(rt, s, arg_string(a, 0, "old", "replace"),
                                           arg_string(a, 1, "new", "replace"),
                                           arg_int(a, 2, "count", -1)));
    });
  }
  if (name == "format") {
    return bound(name,
                 [s](Runtime& rt, CallArgs& a) { return Value::from_string(py_format(rt, s, a)); });
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    return bound(name, [s, name](Runtime&, CallArgs& a) {
      a.check(name, 3, {});
      const std::string& sub = arg_string(a, 0, "sub", name.c_str());
      const std::size_t lo = byte_offset(s, arg_int(a, 1, "start", 0));
      std::size_t hi = s.size();
      if (const Value* e = a.get(2, "end"); e && !e->is_none())
        hi = byte_offset(s, to_index(*e, "slice indices"));
      const std::string window = lo <= hi ? s.substr(lo, hi - lo) : std::string();
      if (name == "count") {
        if (sub.empty()) return Value::from_int(static_cast<std::int64_t>(utf8_length(window)) + 1);
        std::int64_t n = 0;
        for (std::size_t p = window.find(sub); p != std::string::npos;
             p = window.find(sub, p + sub.size()))
          ++n;
        return Value::from_int(n);
      }
      const bool right = name == "rfind" || name == "rindex";
      const std::size_t at = right ? window.rfind(sub) : window.find(sub);
      if (at == std::string::npos || lo > hi) {
        if (name == "index" || name == "rindex") fail("substring not found");
        return Value::from_int(-1);
      }
      return Value::from_int(static_cast<std::int64_t>(utf8_length(s.substr(0, lo + at))));
    });
  }
  if (name == "join") {
    return bound(name, [s](Runtime& rt, CallArgs& a) {
      a.check("join", 1, {});
      if (a.positional.empty()) fail("join() takes exactly one argument (0 given)");
      std::string out;
      std::size_t i = 0;
      for (const Value& v : iterate(a.positional[0])) {
        if (!v.is_string()) {
          fail("sequence item ", i, ": expected str instance, ", python_type_name(v), " found");
        }
        if (i++) out += s;
        out += v.str();
        rt.check_size(out.size());
      }
      return Value::from_string(std::move(out));
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
      name == "islower" || name == "isupper") {
    return bound(name, [s, name](Runtime&, CallArgs& a) {
      a.check(name, 0, {});
      const std::u32string cps = utf8_decode(s);
      auto lower = [](char32_t c) { return c >= 'a' && c <= 'z'; };
      auto upper = [](char32_t c) { return c >= 'A' && c <= 'Z'; };
      auto digit = [](char32_t c) { return c >= '0' && c <= '9'; };
      if (name == "islower" || name == "isupper") {
        bool cased = false;
        for (char32_t c : cps) {
          if (name == "islower" ? upper(c) : lower(c)) return Value::from_bool(false);
          cased = cased || lower(c) || upper(c);
        }
        return Value::from_bool(cased);
      }
      if (cps.empty()) return Value::from_bool(false);
      for (char32_t c : cps) {
        bool ok = name == "isdigit"   ? digit(c)
                  : name == "isalpha" ? lower(c) || upper(c)
                  : name == "isalnum" ? lower(c) || upper(c) || digit(c)
                                      : py_isspace(c);
        if (!ok) return Value::from_bool(false);
      }
      return Value::from_bool(true);
    });
  }
  return no_attribute(obj, name);
}

Value dict_method(const Value& obj, const std::string& name) {
  const auto d = obj.dict;
  if (name == "items" || name == "keys" || name == "values") {
    return bound(name, [d, name](Runtime&, CallArgs& a) {
      a.check(name, 0, {});
      std::vector<Value> out;
      for (const auto& [k, v] : d->entries) {
        if (name == "items") {
          out.push_back(Value::from_list({k, v}, true));
        } else {
          out.push_back(name == "keys" ? k : v);
        }
      }
      return Value::make_view(std::move(out), name == "items"  ? View::DictItems
                                              : name == "keys" ? View::DictKeys
                                                               : View::DictValues);
    });
  }
  if (name == "get") {
    return bound(name, [d](Runtime&, CallArgs& a) {
      a.check("get", 2, {});
      if (a.positional.empty()) fail("get expected at least 1 argument, got 0");
      if (const Value* v = d->find(a.positional[0])) return *v;
      return a.positional.size() > 1 ? a.positional[1] : Value::none();
    });
  }
  if (name == "copy") {
    return bound(name, [d](Runtime&, CallArgs&) {
      Value c = Value::new_dict();
      c.dict->entries = d->entries;
      c.dict->nesting = d->nesting;
      return c;
    });
  }
  if (name == "pop" || name == "popitem" || name == "setdefault" || name == "update" ||
      name == "clear") {
    return unsafe(obj, name);
  }
  return Value();  // not a method: fall back to the item
}

Value list_method(const Value& obj, const std::string& name) {
  const auto l = obj.list;
  if (name == "index" || name == "count") {
    return bound(name, [l, name](Runtime&, CallArgs& a) {
      a.check(name, 1, {});
      if (a.positional.empty()) fail(name, "() takes exactly one argument (0 given)");
      std::int64_t n = 0;
      for (std::size_t i = 0; i < l->items.size(); ++i) {
        if (!equals(l->items[i], a.positional[0])) continue;
        if (name == "index") return Value::from_int(static_cast<std::int64_t>(i));
        ++n;
      }
      if (name == "index") fail(to_repr(a.positional[0]), " is not in list");
      return Value::from_int(n);
    });
  }
  if (!l->tuple && (name == "append" || name == "extend" || name == "insert" || name == "pop" ||
                    name == "remove" || name == "reverse" || name == "sort" || name == "clear")) {
    return unsafe(obj, name);
  }
  return no_attribute(obj, name);
}

Value make_range(Runtime& rt, CallArgs& a) {
  a.check("range", 3, {});
  if (a.positional.empty()) fail("range expected at least 1 argument, got 0");
  std::int64_t start = 0, stop, step = 1;
  if (a.positional.size() == 1) {
    stop = to_index(a.positional[0], "range() argument");
  } else {
    start = to_index(a.positional[0], "range() argument");
    stop = to_index(a.positional[1], "range() argument");
    if (a.positional.size() > 2) step = to_index(a.positional[2], "range() argument");
  }
  if (step == 0) fail("range() arg 3 must not be zero");
  std::vector<Value> out;
  for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    // The sandbox's MAX_RANGE.
    if (out.size() >= 100000)
      fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    rt.step();
    out.push_back(Value::from_int(i));
    if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
  }
  return Value::from_list(std::move(out));
}

Value fill_mapping(Value target, CallArgs& a, const char* fn) {
  if (a.positional.size() > 1) fail(fn, " expected at most 1 argument, got ", a.positional.size());
  if (!a.positional.empty()) {
    const Value& src = a.positional[0];
    if (src.kind == Kind::Dict || src.kind == Kind::Namespace) {
      for (const auto& [k, v] : src.dict->entries) target.dict->set(k, v);
    } else {
      for (const Value& pair : iterate(src)) {
        std::vector<Value> kv = iterate(pair);
        if (kv.size() != 2)
          fail("dictionary update sequence element has length ", kv.size(), "; 2 is required");
        target.dict->set(kv[0], kv[1]);
      }
    }
  }
  for (auto& [k, v] : a.keywords) target.dict->set(Value::from_string(k), v);
  return target;
}

std::string strftime_now(const RenderOptions& options, const std::string& format) {
  std::tm local{};
  if (options.fixed_unix_time) {
    const auto fixed = static_cast<std::time_t>(*options.fixed_unix_time);
    gmtime_r(&fixed, &local);
  } else {
    const std::time_t now = std::time(nullptr);
    localtime_r(&now, &local);
  }
  if (format.empty()) return {};
  for (std::size_t cap = 256; cap <= 65536; cap *= 4) {
    std::string buf(cap, '\0');
    const std::size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &local);
    if (n > 0) {
      buf.resize(n);
      return buf;
    }
  }
  return {};
}

}  // namespace

std::int64_t to_index(const Value& v, const char* what) {
  if (v.kind == Kind::Int) return v.integer;
  if (v.kind == Kind::Bool) return v.boolean;
  fail(what, " must be integers, not ", python_type_name(v));
}

std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  std::u32string cps = utf8_decode(s);
  std::u32string set;
  const bool by_set = chars && !chars->is_none() && !chars->is_undefined();
  if (by_set) {
    if (!chars->is_string()) fail("strip arg must be None or str");
    set = utf8_decode(chars->str());
  }
  auto strip_it = [&](char32_t c) {
    return by_set ? set.find(c) != std::u32string::npos : py_isspace(c);
  };
  std::size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_it(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(cps[e - 1])) --e;
  }
  return utf8_encode(std::u32string_view(cps).substr(b, e - b));
}

std::string py_upper(const std::string& s) {
  std::string out = s;
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  }
  return out;
}

std::string py_lower(const std::string& s) {
  std::string out = s;
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

std::string py_title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    const bool lower = c >= 'a' && c <= 'z', upper = c >= 'A' && c <= 'Z';
    if (lower && !prev_cased) c = static_cast<char>(c - 32);
    if (upper && prev_cased) c = static_cast<char>(c + 32);
    prev_cased = lower || upper;
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::string out = py_lower(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 32);
  return out;
}

std::string py_replace(Runtime& rt, const std::string& s, const std::string& from,
                       const std::string& to, std::int64_t count) {
  std::string out;
  std::int64_t done = 0;
  if (from.empty()) {
    // Python inserts `to` before every character and at the end.
    const std::u32string cps = utf8_decode(s);
    for (std::size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      if (i < cps.size()) out += utf8_encode(std::u32string(1, cps[i]));
      rt.check_size(out.size());
    }
    return out;
  }
  std::size_t start = 0;
  while (count < 0 || done < count) {
    const std::size_t at = s.find(from, start);
    if (at == std::string::npos) break;
    out.append(s, start, at - start);
    out += to;
    rt.check_size(out.size());
    start = at + from.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  rt.check_size(out.size());
  return out;
}

// Python's `str % args` for the conversions templates use: %s, %r, %d, %i, %f, %%.
std::string percent_format(Runtime& rt, const std::string& fmt, const Value& args) {
  std::vector<Value> list;
  if (args.is_list() && args.list->tuple) {
    list = args.list->items;
  } else {
    list.push_back(args);
  }
  std::size_t next = 0;
  std::string out;
  for (std::size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out.push_back(fmt[i]);
      continue;
    }
    // %[flags][width][.precision]type, the printf subset Python shares with C.
    std::string spec = "%";
    ++i;
    while (i < fmt.size() && std::string_view("-+ 0#").find(fmt[i]) != std::string_view::npos)
      spec += fmt[i++];
    int width = 0, precision = -1;
    while (i < fmt.size() && fmt[i] >= '0' && fmt[i] <= '9' && width < 1000)
      width = width * 10 + (fmt[i++] - '0');
    if (i < fmt.size() && fmt[i] == '.') {
      precision = 0;
      ++i;
      while (i < fmt.size() && fmt[i] >= '0' && fmt[i] <= '9' && precision < 1000) {
        precision = precision * 10 + (fmt[i++] - '0');
      }
    }
    if (i >= fmt.size()) fail("incomplete format");
    const char c = fmt[i];
    if (c == '%') {
      out.push_back('%');
      continue;
    }
    if (next >= list.size()) fail("not enough arguments for format string");
    const Value& v = list[next++];
    std::string piece;
    if (c == 's' || c == 'r') {
      piece = c == 's' ? to_str(v) : to_repr(v);
      if (precision >= 0) {
        std::u32string cps = utf8_decode(piece);
        if (cps.size() > static_cast<std::size_t>(precision))
          piece = utf8_encode(cps.substr(0, static_cast<std::size_t>(precision)));
      }
      const auto len = static_cast<int>(utf8_length(piece));
      if (len < width) {
        const std::string pad(static_cast<std::size_t>(width - len), ' ');
        piece = spec.find('-') != std::string::npos ? piece + pad : pad + piece;
      }
    } else if (std::string_view("diouxXeEfFgG").find(c) != std::string_view::npos) {
      if (!v.is_number())
        fail("%", std::string(1, c), " format: a real number is required, not ",
             python_type_name(v));
      if (width) spec += std::to_string(width);
      if (precision >= 0) spec += "." + std::to_string(precision);
      char buf[1200];
      if (std::string_view("diouxX").find(c) != std::string_view::npos) {
        const double d = v.as_double();
        const long long n =
            v.kind == Kind::Float
                ? (std::isfinite(d) && std::fabs(d) < 9.2e18 ? static_cast<long long>(d) : 0)
                : static_cast<long long>(to_index(v, "format argument"));
        spec += "ll";
        spec += c == 'i' || c == 'u' ? 'd' : c;
        std::snprintf(buf, sizeof buf, spec.c_str(), n);
      } else {
        spec += c;
        std::snprintf(buf, sizeof buf, spec.c_str(), v.as_double());
      }
      piece = buf;
    } else {
      fail("unsupported format character '", std::string(1, c), "'");
    }
    out += piece;
    rt.check_size(out.size());
  }
  if (next < list.size()) fail("not all arguments converted during string formatting");
  return out;
}

Value get_attribute(Runtime& rt, const Value& obj, const std::string& name) {
  (void)rt;
  switch (obj.kind) {
    case Kind::String:
      return string_method(obj, name);
    case Kind::Dict: {
      Value m = dict_method(obj, name);
      if (!m.is_undefined() || (m.text && !m.str().empty())) return m;
      if (const Value* v = obj.dict->find(std::string_view(name))) return *v;
      return no_attribute(obj, name);
    }
    case Kind::Namespace: {
      if (const Value* v = obj.dict->find(std::string_view(name))) return *v;
      return no_attribute(obj, name);
    }
    case Kind::List:
      return list_method(obj, name);
    default:
      return no_attribute(obj, name);
  }
}

Value get_item(Runtime& rt, const Value& obj, const Value& key) {
  switch (obj.kind) {
    case Kind::Dict:
    case Kind::Namespace:
      if (const Value* v = obj.dict->find(key)) return *v;
      break;
    case Kind::List:
      // Views and generators are not subscriptable; jinja2 turns that into an undefined.
      if (obj.list->view != View::None) break;
      [[fallthrough]];
    case Kind::String:
      if (key.kind == Kind::Int || key.kind == Kind::Bool) {
        std::int64_t i = to_index(key, "indices");
        if (obj.is_string()) {
          const std::u32string cps = utf8_decode(obj.str());
          const auto n = static_cast<std::int64_t>(cps.size());
          if (i < 0) i += n;
          if (i < 0 || i >= n)
            return Value::undefined(std::string("'str object' has no element ") +
                                    std::to_string(i));
          return Value::from_string(
              utf8_encode(std::u32string(1, cps[static_cast<std::size_t>(i)])));
        }
        const auto n = static_cast<std::int64_t>(obj.list->items.size());
        const std::int64_t orig = i;
        if (i < 0) i += n;
        if (i < 0 || i >= n) {
          return Value::undefined(std::string("'") + object_type_repr(obj) + "' has no element " +
                                  std::to_string(orig));
        }
        return obj.list->items[static_cast<std::size_t>(i)];
      }
      break;
    default:
      break;
  }
  if (key.is_string()) return get_attribute(rt, obj, key.str());
  return Value::undefined(std::string("'") + object_type_repr(obj) + "' has no element " +
                          to_repr(key));
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind) {
    case Kind::List:
      return v.list->items;
    case Kind::Dict: {
      std::vector<Value> keys;
      keys.reserve(v.dict->entries.size());
      for (const auto& [k, val] : v.dict->entries) keys.push_back(k);
      return keys;
    }
    case Kind::String: {
      std::vector<Value> chars;
      for (char32_t c : utf8_decode(v.str()))
        chars.push_back(Value::from_string(utf8_encode(std::u32string(1, c))));
      return chars;
    }
    case Kind::Undefined:
      return {};
    default:
      fail("'", python_type_name(v), "' object is not iterable");
  }
}

Value global_value(std::string_view name) {
  static const Value range = Value::from_callable("range", make_range);
  static const Value dict = Value::from_callable(
      "dict", [](Runtime&, CallArgs& a) { return fill_mapping(Value::new_dict(), a, "dict"); });
  static const Value ns = Value::from_callable("namespace", [](Runtime& rt, CallArgs& a) {
    Value n = Value::new_namespace();
    rt.track_namespace(n);
    fill_mapping(n, a, "namespace");
    for (const auto& [k, v] : n.dict->entries) {
      if (k.is_string() && !k.str().empty() && k.str()[0] == '_') {
        fail("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '",
             k.str(), "'. Please rename the attribute.");
      }
    }
    return n;
  });
  static const Value raise =
      Value::from_callable("raise_exception", [](Runtime&, CallArgs& a) -> Value {
        a.check("raise_exception", 1, {"message"});
        const Value* m = a.get(0, "message");
        if (!m) fail("raise_exception() missing 1 required positional argument: 'message'");
        throw TemplateRaise(to_str(*m));
      });
  static const Value now = Value::from_callable("strftime_now", [](Runtime& rt, CallArgs& a) {
    a.check("strftime_now", 1, {"format"});
    const Value* f = a.get(0, "format");
    if (!f || !f->is_string()) fail("strftime_now() argument must be str");
    return Value::from_string(strftime_now(rt.options(), f->str()));
  });
  if (name == "range") return range;
  if (name == "dict") return dict;
  if (name == "namespace") return ns;
  if (name == "raise_exception") return raise;
  if (name == "strftime_now") return now;
  return Value();
}

}  // namespace redhare::jinja
