#include "text/unicode.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>
#include <algorithm>
#include <array>
#include <iterator>

#include "core/error.h"

namespace redhare::text {

char32_t utf8_next(std::string_view s, std::size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  const std::size_t n = utf8_len(b0);
  RH_CHECK(i + n <= s.size(), "truncated UTF-8 in text that was validated");
  char32_t c = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (std::size_t k = 1; k < n; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return c;
}

void utf8_append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::size_t utf8_count(std::string_view s) {
  std::size_t n = 0;
  for (char ch : s) n += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
  return n;
}

namespace {

// How many bytes of a well-formed character start at s[i]: 0 when s[i] cannot start one. When the
// text ends inside a character that is well-formed so far, *partial receives the bytes seen.
std::size_t well_formed_at(std::string_view s, std::size_t i, std::size_t* partial) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte (Unicode Table 3-7)
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  std::size_t k = 1;
  for (; k < n && i + k < s.size(); ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    const unsigned char min = k == 1 ? lo : 0x80, max = k == 1 ? hi : 0xBF;
    if (b < min || b > max) {
      if (partial) *partial = k;  // a maximal subpart: replaced by one U+FFFD as a whole
      return 0;
    }
  }
  if (k < n) {
    if (partial) *partial = k;
    return 0;
  }
  return n;
}

}  // namespace

std::size_t utf8_valid_prefix(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t n = well_formed_at(s, i, nullptr);
    if (n == 0) break;
    i += n;
  }
  return i;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t partial = 1;
    const std::size_t n = well_formed_at(s, i, &partial);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      utf8_append(out, kReplacementChar);
      i += partial;
    }
  }
  return out;
}

std::size_t utf8_incomplete_tail(std::string_view s) {
  for (std::size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const std::size_t start = s.size() - back;
    const auto b = static_cast<unsigned char>(s[start]);
    if ((b & 0xC0) == 0x80) continue;
    std::size_t partial = 0;
    const std::size_t n = well_formed_at(s, start, &partial);
    return n == 0 && partial == back ? back : 0;
  }
  return 0;
}

namespace {

struct DeltaEntry {
  char32_t first, last;
  const char* category;
};
constexpr DeltaEntry kDelta[] = {
#include "text/unicode_delta.inc"
};

}  // namespace

const std::vector<CategoryRange>& unicode_delta() {
  static const std::vector<CategoryRange> ranges = [] {
    std::vector<CategoryRange> out;
    for (const DeltaEntry& e : kDelta) {
      const int32_t value = u_getPropertyValueEnum(UCHAR_GENERAL_CATEGORY_MASK, e.category);
      RH_CHECK(value != UCHAR_INVALID_CODE, "unknown category in unicode_delta.inc: ", e.category);
      for (char32_t c = e.first; c <= e.last; ++c) {
        // ICU knows some of these already (Unicode 15.0); its answer stands.
        if (u_charType(static_cast<UChar32>(c)) != U_UNASSIGNED) continue;
        if (!out.empty() && out.back().last + 1 == c &&
            out.back().gc_mask == static_cast<uint32_t>(value)) {
          out.back().last = c;
        } else {
          out.push_back({c, c, static_cast<uint32_t>(value)});
        }
      }
    }
    return out;
  }();
  return ranges;
}

uint32_t general_category_mask(char32_t c) {
  const auto ch = static_cast<UChar32>(c);
  if (u_charType(ch) != U_UNASSIGNED || c < 0x800) return U_GET_GC_MASK(ch);
  const auto& delta = unicode_delta();
  const auto it = std::upper_bound(delta.begin(), delta.end(), c,
                                   [](char32_t x, const CategoryRange& r) { return x < r.first; });
  if (it != delta.begin() && c <= std::prev(it)->last) return std::prev(it)->gc_mask;
  return U_GC_CN_MASK;
}

namespace {

// Alphabetic for characters ICU does not know: letters and letter numbers (the derived property
// also takes some marks and symbols, which the delta table cannot tell apart).
bool is_alphabetic(char32_t c) {
  const auto ch = static_cast<UChar32>(c);
  if (u_charType(ch) != U_UNASSIGNED) return u_isUAlphabetic(ch);
  return (general_category_mask(c) & (U_GC_L_MASK | U_GC_NL_MASK)) != 0;
}

}  // namespace

bool is_whitespace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return u_isUWhiteSpace(static_cast<UChar32>(c));
}

bool is_numeric(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return (general_category_mask(c) & (U_GC_ND_MASK | U_GC_NL_MASK | U_GC_NO_MASK)) != 0;
}

bool is_alphanumeric(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
  return is_alphabetic(c) || is_numeric(c);
}

bool is_punctuation(char32_t c) {
  if (c < 0x80)
    return c > 0x20 && c < 0x7F &&
           !((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'));
  return (general_category_mask(c) & U_GC_P_MASK) != 0;
}

bool is_regex_word(char32_t c) {
  if (c < 0x80) return c == '_' || is_alphanumeric(c);
  if (c == 0x200C || c == 0x200D) return true;
  return is_alphabetic(c) ||
         (general_category_mask(c) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

namespace {

// Sorted; see tools/tokenizer/make_unicode_delta.py.
constexpr char32_t kNormUnknown[] = {
#include "text/unicode_norm_unknown.inc"
};

std::string icu_normalize(std::string_view s, NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* norm = nullptr;
  switch (form) {
    case NormalForm::kNFC:
      norm = icu::Normalizer2::getNFCInstance(status);
      break;
    case NormalForm::kNFD:
      norm = icu::Normalizer2::getNFDInstance(status);
      break;
    case NormalForm::kNFKC:
      norm = icu::Normalizer2::getNFKCInstance(status);
      break;
    case NormalForm::kNFKD:
      norm = icu::Normalizer2::getNFKDInstance(status);
      break;
  }
  if (U_FAILURE(status)) fail("ICU normalizer unavailable: ", u_errorName(status));
  const auto in =
      icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  const icu::UnicodeString res = norm->normalize(in, status);
  if (U_FAILURE(status)) fail("Unicode normalization failed: ", u_errorName(status));
  std::string out;
  res.toUTF8String(out);
  return out;
}

}  // namespace

namespace {

bool norm_unknown(char32_t c) {
  return c >= kNormUnknown[0] &&
         std::binary_search(std::begin(kNormUnknown), std::end(kNormUnknown), c);
}

// Normalizes a stretch of text that holds no character unknown to the reference's tables.
std::string normalize_known(std::string_view s, NormalForm form) {
  std::string out = icu_normalize(s, form);
  if (form != NormalForm::kNFC && form != NormalForm::kNFKC) return out;
  // Composition can still make one: the reference, not knowing the composite, leaves the
  // pieces apart.
  std::string fixed;
  bool changed = false;
  for (std::size_t i = 0; i < out.size();) {
    const std::size_t at = i;
    const char32_t c = utf8_next(out, i);
    if (norm_unknown(c)) {
      std::string one;
      utf8_append(one, c);
      fixed += icu_normalize(one, NormalForm::kNFD);
      changed = true;
    } else {
      fixed.append(out, at, i - at);
    }
  }
  return changed ? fixed : out;
}

}  // namespace

std::string normalize_unicode(std::string_view s, NormalForm form) {
  bool ascii = true;
  for (char ch : s) ascii = ascii && static_cast<unsigned char>(ch) < 0x80;
  if (ascii) return std::string(s);  // every normal form of ASCII is itself
  // Characters the reference's (older) tables do not know stay as they are; they have no
  // decomposition there and block composition like any starter, so the text between them is
  // normalized on its own.
  std::string out;
  std::size_t seg = 0;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t at = i;
    if (!norm_unknown(utf8_next(s, i))) continue;
    out += normalize_known(s.substr(seg, at - seg), form);
    out.append(s.substr(at, i - at));
    seg = i;
  }
  return out + normalize_known(s.substr(seg), form);
}

std::string to_lower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      out.push_back(static_cast<char>(b >= 'A' && b <= 'Z' ? b + 32 : b));
      ++i;
      continue;
    }
    const char32_t c = utf8_next(s, i);
    // One character at a time, so ICU sees no context and applies only unconditional mappings.
    UChar src[2];
    int32_t src_len = 0;
    U16_APPEND_UNSAFE(src, src_len, static_cast<UChar32>(c));
    UChar dst[8];
    UErrorCode status = U_ZERO_ERROR;
    const int32_t n = u_strToLower(dst, 8, src, src_len, "", &status);
    if (U_FAILURE(status)) {
      utf8_append(out, c);
      continue;
    }
    for (int32_t k = 0; k < n;) {
      UChar32 lc;
      U16_NEXT(dst, k, n, lc);
      utf8_append(out, static_cast<char32_t>(lc));
    }
  }
  return out;
}

namespace {

struct ByteMaps {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 324> to_byte{};
  ByteMaps() {
    to_byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      // Printable Latin-1 bytes stand for themselves; the rest are moved past 255, in order.
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      const int c = printable ? b : next++;
      utf8_append(to_unicode[b], static_cast<char32_t>(c));
      to_byte[c] = static_cast<int16_t>(b);
    }
  }
};

const ByteMaps& byte_maps() {
  static const ByteMaps maps;
  return maps;
}

}  // namespace

std::string_view byte_to_unicode(unsigned char b) {
  return byte_maps().to_unicode[b];
}

int unicode_to_byte(char32_t c) {
  return c < 324 ? byte_maps().to_byte[c] : -1;
}

}  // namespace redhare::text
