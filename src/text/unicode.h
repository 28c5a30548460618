// UTF-8 and Unicode character properties as the Hugging Face `tokenizers` library sees them.
//
// The reference is written in Rust, so "whitespace", "alphanumeric" and "lowercase" here mean what
// Rust's char methods mean (White_Space, Alphabetic|Numeric, full per-character lowercase
// mapping). ICU answers the property questions; the UTF-8 handling is our own so that ill-formed
// input is replaced exactly the way Rust's from_utf8_lossy and Python's errors="replace" do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace redhare::text {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Decodes the UTF-8 character at s[i] (s must be valid UTF-8) and advances i past it.
char32_t utf8_next(std::string_view s, std::size_t& i);
// Byte length of the valid UTF-8 character starting with lead byte b.
inline std::size_t utf8_len(unsigned char b) {
  return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}
void utf8_append(std::string& out, char32_t c);
std::size_t utf8_count(std::string_view s);

// Length of the longest prefix of s that is well-formed UTF-8.
std::size_t utf8_valid_prefix(std::string_view s);
inline bool utf8_is_valid(std::string_view s) {
  return utf8_valid_prefix(s) == s.size();
}
// Replaces every maximal ill-formed subsequence with U+FFFD (Unicode's recommended practice, the
// rule shared by Rust's String::from_utf8_lossy and Python's bytes.decode(errors="replace")).
std::string utf8_lossy(std::string_view s);
// Length of the shortest suffix of s that is an incomplete (but so far well-formed) character.
std::size_t utf8_incomplete_tail(std::string_view s);

// Character classes with Rust's meanings.
bool is_whitespace(char32_t c);    // char::is_whitespace: White_Space property
bool is_alphanumeric(char32_t c);  // char::is_alphanumeric: Alphabetic or general category N*
bool is_numeric(char32_t c);       // char::is_numeric: general category N*
bool is_punctuation(char32_t c);   // general category P*, or ASCII punctuation
// \w of the regex engines: Alphabetic, marks, Nd, Pc and the two joiners.
bool is_regex_word(char32_t c);

// General category of c as an ICU mask (U_GC_*_MASK). Characters that ICU leaves unassigned but
// the reference's newer Unicode version assigns (unicode_delta.inc) get their category from
// there.
uint32_t general_category_mask(char32_t c);

// The ranges of characters that ICU leaves unassigned and the reference's Unicode assigns, with
// their category masks.
struct CategoryRange {
  char32_t first, last;
  uint32_t gc_mask;
};
const std::vector<CategoryRange>& unicode_delta();

// Whole-string transforms used by the normalizers.
enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };
std::string normalize_unicode(std::string_view s, NormalForm form);
// Lowercases character by character, without context (so a final sigma stays σ), like
// `s.chars().flat_map(char::to_lowercase)`.
std::string to_lower(std::string_view s);

// GPT-2's reversible byte <-> printable-character map used by the ByteLevel components.
// byte_to_unicode(b) is the UTF-8 encoding of the character standing for byte b.
std::string_view byte_to_unicode(unsigned char b);
// The byte a character stands for, or -1 when the character is not in the map.
int unicode_to_byte(char32_t c);

}  // namespace redhare::text
