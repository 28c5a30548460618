#include "text/regex_syntax.h"

#include <cstdio>
#include <map>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/uchar.h>
#include <unicode/uniset.h>
#include <unicode/unistr.h>

#include "core/error.h"
#include "text/unicode.h"

namespace redhare::text {

namespace {

// Code points that ICU knows as assigned but PCRE2's (older) tables leave unassigned. PCRE2
// gives them no property at all, so \p{L} misses a letter from a recent Unicode version that
// the reference, with newer tables, treats as a letter.
const std::vector<char32_t>& newer_than_pcre2() {
  static const std::vector<char32_t> chars = [] {
    std::vector<char32_t> out;
    int err = 0;
    PCRE2_SIZE off = 0;
    const char* probe = "^\\p{Cn}$";
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(probe), PCRE2_ZERO_TERMINATED,
                                     PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
    RH_CHECK(code, "PCRE2 cannot compile its own Cn probe");
    pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
    for (UChar32 c = 0; c <= 0x10FFFF; ++c) {
      if (u_charType(c) == U_UNASSIGNED || (c >= 0xD800 && c <= 0xDFFF)) continue;
      UVersionInfo age;
      u_charAge(c, age);
      if (age[0] < 13) continue;  // every PCRE2 with UTF support knows these
      std::string utf8;
      utf8_append(utf8, static_cast<char32_t>(c));
      if (pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(utf8.data()), utf8.size(), 0, 0, md,
                      nullptr) >= 0) {
        out.push_back(static_cast<char32_t>(c));
      }
    }
    pcre2_match_data_free(md);
    pcre2_code_free(code);
    return out;
  }();
  return chars;
}

void append_range(std::string& members, char32_t first, char32_t last) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "\\x{%X}", static_cast<unsigned>(first));
  members += buf;
  if (last > first) {
    std::snprintf(buf, sizeof buf, "-\\x{%X}", static_cast<unsigned>(last));
    members += buf;
  }
}

// The general-category mask a property name stands for, for characters that ICU does not know
// either (unicode_delta()); 0 for names that are not categories.
uint32_t category_mask_of(const std::string& name) {
  if (name == "Alphabetic" || name == "Alpha") return U_GC_L_MASK | U_GC_NL_MASK;
  const int32_t v = u_getPropertyValueEnum(UCHAR_GENERAL_CATEGORY_MASK, name.c_str());
  return v == UCHAR_INVALID_CODE ? 0 : static_cast<uint32_t>(v);
}

// The members ("\x{..}-\x{..}...") to add to a class for \p{name}, or "" when none are needed
// or the name is unknown (PCRE2 will then judge the name itself).
std::string extra_members(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::string> cache;
  std::lock_guard lock(mu);
  if (auto it = cache.find(name); it != cache.end()) return it->second;
  std::string members;
  // Characters ICU knows and PCRE2 does not: ICU says whether they have the property.
  const auto& fresh = newer_than_pcre2();
  UErrorCode status = U_ZERO_ERROR;
  const icu::UnicodeSet set(icu::UnicodeString::fromUTF8("[:" + name + ":]"), status);
  if (U_SUCCESS(status)) {
    for (std::size_t k = 0; k < fresh.size();) {
      if (!set.contains(static_cast<UChar32>(fresh[k]))) {
        ++k;
        continue;
      }
      std::size_t end = k;
      while (end + 1 < fresh.size() && fresh[end + 1] == fresh[end] + 1 &&
             set.contains(static_cast<UChar32>(fresh[end + 1]))) {
        ++end;
      }
      append_range(members, fresh[k], fresh[end]);
      k = end + 1;
    }
  }
  // Characters neither knows: their category comes from the reference's Unicode version.
  if (const uint32_t mask = category_mask_of(name)) {
    for (const CategoryRange& r : unicode_delta()) {
      if (r.gc_mask & mask) append_range(members, r.first, r.last);
    }
  }
  return cache[name] = members;
}

constexpr std::string_view kSpace =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";
constexpr std::string_view kHex = "0-9a-fA-F";

std::string word_members() {
  return "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}" + extra_members("Alphabetic") +
         extra_members("M") + extra_members("Nd") + extra_members("Pc");
}

}  // namespace

std::string translate_oniguruma(const std::string& pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  int class_depth = 0;
  auto put_class = [&](std::string_view members, bool negated) {
    if (class_depth > 0) {
      out += members;
    } else {
      out += negated ? "[^" : "[";
      out += members;
      out += ']';
    }
  };
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char ch = pattern[i];
    if (ch == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      const bool in_class = class_depth > 0;
      const bool negated = e == 'W' || e == 'S' || e == 'H' || e == 'D' || e == 'P';
      if (negated && in_class) {
        out += ch;
        out += e;
      } else if (e == 'w' || e == 'W') {
        put_class(word_members(), negated);
      } else if (e == 's' || e == 'S') {
        put_class(kSpace, negated);
      } else if (e == 'h' || e == 'H') {
        put_class(kHex, negated);
      } else if (e == 'd' || e == 'D') {
        put_class("\\p{Nd}" + extra_members("Nd"), negated);
      } else if ((e == 'p' || e == 'P') && i + 1 < pattern.size()) {
        // \pL or \p{Name} (\p{^Name} negates).
        std::string name;
        std::size_t end = i + 1;
        if (pattern[i + 1] == '{') {
          end = pattern.find('}', i + 2);
          if (end == std::string::npos) fail("regex /", pattern, "/: unterminated \\p{");
          name = pattern.substr(i + 2, end - i - 2);
        } else {
          name = pattern.substr(i + 1, 1);
        }
        bool neg = e == 'P';
        if (!name.empty() && name[0] == '^') {
          neg = !neg;
          name.erase(0, 1);
        }
        const std::string extra = extra_members(name);
        const std::string self = pattern.substr(i - 1, end + 1 - (i - 1));
        i = end;
        if (extra.empty()) {
          out += self;
        } else if (neg && in_class) {
          out += self;  // see the header: left to PCRE2
        } else {
          put_class("\\p{" + name + "}" + extra, neg);
        }
      } else {
        out += ch;
        out += e;
      }
      continue;
    }
    if (ch == '[') {
      // "[:alpha:]" inside a class is a POSIX name, not a nested class.
      if (class_depth > 0 && i + 1 < pattern.size() && pattern[i + 1] == ':') {
        const std::size_t close = pattern.find(":]", i + 2);
        if (close != std::string::npos) {
          out.append(pattern, i, close + 2 - i);
          i = close + 1;
          continue;
        }
      }
      ++class_depth;
      out += ch;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (ch == ']' && class_depth > 0) --class_depth;
    out += ch;
  }
  return out;
}

}  // namespace redhare::text
