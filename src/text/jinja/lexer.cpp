#include "text/jinja/lexer.h"

#include <cstdlib>

#include "text/jinja/template.h"
#include "text/jinja/value.h"

namespace redhare::jinja {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_name_char(char c) {
  return is_name_start(c) || is_digit(c);
}
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// jinja2 turns every \r\n and \r into \n before lexing, and (keep_trailing_newline being off)
// drops one newline at the very end of the template.
std::string normalize_newlines(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < in.size() && in[i + 1] == '\n') ++i;
    } else {
      out.push_back(in[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

void rstrip(std::string& s) {
  while (!s.empty() && is_space(s.back())) s.pop_back();
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(normalize_newlines(source)) {}

  std::vector<Token> run() {
    const std::size_t n = src_.size();
    while (pos_ < n) {
      const std::size_t tag = find_tag(pos_);
      if (tag == std::string::npos) {
        emit_text(src_.substr(pos_), pos_);
        pos_ = n;
        break;
      }
      const char kind = src_[tag + 1];
      std::size_t after = tag + 2;
      char sign = 0;
      if (after < n && (src_[after] == '-' || src_[after] == '+')) sign = src_[after++];
      std::string text = src_.substr(pos_, tag - pos_);
      apply_left_strip(text, sign, kind != '{');
      emit_text(std::move(text), pos_);
      line_starting_ = false;
      std::size_t raw_body = 0;
      if (kind == '%' && match_raw_begin(after, raw_body)) {
        lex_raw(tag, raw_body);
      } else if (kind == '#') {
        lex_comment(tag, after);
      } else {
        lex_tag(tag, after, kind == '%');
      }
    }
    Token end{TokenType::End, {}};
    set_location(end, n);
    out_.push_back(std::move(end));
    return std::move(out_);
  }

 private:
  std::size_t find_tag(std::size_t from) const {
    for (std::size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return std::string::npos;
  }

  // '-' strips all whitespace before a tag; lstrip_blocks strips the spaces between the start of
  // a line and a block or comment tag, unless the tag says '+'.
  void apply_left_strip(std::string& text, char sign, bool block_like) const {
    if (sign == '-') {
      rstrip(text);
    } else if (sign != '+' && block_like) {
      const std::size_t nl = text.rfind('\n');
      const std::size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if (l_pos > 0 || line_starting_) {
        bool all_space = l_pos < text.size();
        for (std::size_t i = l_pos; i < text.size(); ++i) {
          if (!is_space(text[i])) all_space = false;
        }
        if (all_space) text.resize(l_pos);
      }
    }
  }

  void emit_text(std::string text, std::size_t at) {
    if (text.empty()) return;
    Token t{TokenType::Text, std::move(text)};
    set_location(t, at);
    out_.push_back(std::move(t));
  }

  bool starts_with(std::size_t p, std::string_view s) const {
    return src_.compare(p, s.size(), s) == 0;
  }
  std::size_t skip_spaces(std::size_t p) const {
    while (p < src_.size() && is_space(src_[p])) ++p;
    return p;
  }

  // Matches `\s*raw\s*(-%}\s*|%})` after the `{%[-+]`.
  bool match_raw_begin(std::size_t p, std::size_t& body) const {
    p = skip_spaces(p);
    if (!starts_with(p, "raw")) return false;
    p = skip_spaces(p + 3);
    if (starts_with(p, "-%}")) {
      body = skip_spaces(p + 3);
      return true;
    }
    if (starts_with(p, "%}")) {
      body = p + 2;
      return true;
    }
    return false;
  }

  void lex_raw(std::size_t tag, std::size_t body) {
    line_starting_ = body > 0 && src_[body - 1] == '\n';
    for (std::size_t p = src_.find("{%", body); p != std::string::npos;
         p = src_.find("{%", p + 1)) {
      std::size_t q = p + 2;
      char sign = 0;
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) sign = src_[q++];
      q = skip_spaces(q);
      if (!starts_with(q, "endraw")) continue;
      q = skip_spaces(q + 6);
      std::size_t end;
      if (starts_with(q, "+%}")) {
        end = q + 3;
      } else if (starts_with(q, "-%}")) {
        end = skip_spaces(q + 3);
      } else if (starts_with(q, "%}")) {
        end = q + 2;
        if (end < src_.size() && src_[end] == '\n') ++end;
      } else {
        continue;
      }
      std::string text = src_.substr(body, p - body);
      apply_left_strip(text, sign, true);
      emit_text(std::move(text), body);
      pos_ = end;
      line_starting_ = src_[end - 1] == '\n';
      return;
    }
    error_at(tag, "Missing end of raw directive");
  }

  void lex_comment(std::size_t tag, std::size_t after) {
    const std::size_t close = src_.find("#}", after);
    if (close == std::string::npos) error_at(tag, "Missing end of comment tag");
    const char sign = close > after ? src_[close - 1] : 0;
    std::size_t end = close + 2;
    if (sign == '-') {
      end = skip_spaces(end);
    } else if (sign != '+' && end < src_.size() && src_[end] == '\n') {
      ++end;
    }
    pos_ = end;
    line_starting_ = src_[end - 1] == '\n';
  }

  void lex_tag(std::size_t tag, std::size_t p, bool block) {
    Token begin{block ? TokenType::BlockBegin : TokenType::VariableBegin, block ? "{%" : "{{"};
    set_location(begin, tag);
    out_.push_back(std::move(begin));
    std::vector<char> brackets;
    const std::size_t n = src_.size();
    while (true) {
      if (p >= n)
        error_at(tag, block ? "unexpected end of template, expected '%}'"
                            : "unexpected end of template, expected '}}'");
      if (brackets.empty()) {
        std::size_t end = 0;
        if (block) {
          if (starts_with(p, "+%}")) {
            end = p + 3;
          } else if (starts_with(p, "-%}")) {
            end = skip_spaces(p + 3);
          } else if (starts_with(p, "%}")) {
            end = p + 2;
            if (end < n && src_[end] == '\n') ++end;
          }
        } else if (starts_with(p, "-}}")) {
          end = skip_spaces(p + 3);
        } else if (starts_with(p, "}}")) {
          end = p + 2;
        }
        if (end) {
          Token t{block ? TokenType::BlockEnd : TokenType::VariableEnd, block ? "%}" : "}}"};
          set_location(t, p);
          out_.push_back(std::move(t));
          pos_ = end;
          line_starting_ = src_[end - 1] == '\n';
          return;
        }
      }
      const char c = src_[p];
      if (is_space(c)) {
        p = skip_spaces(p);
        continue;
      }
      Token t{TokenType::Operator, {}};
      set_location(t, p);
      if (is_name_start(c)) {
        std::size_t q = p;
        while (q < n && is_name_char(src_[q])) ++q;
        t.type = TokenType::Name;
        t.text = src_.substr(p, q - p);
        p = q;
      } else if (is_digit(c)) {
        p = lex_number(p, t);
      } else if (c == '\'' || c == '"') {
        p = lex_string(p, t);
      } else {
        static constexpr std::string_view two[] = {"//", "**", "==", "!=", ">=", "<="};
        std::size_t len = 0;
        for (auto op : two) {
          if (starts_with(p, op)) len = 2;
        }
        if (!len) {
          if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
            error_at(p, std::string("unexpected char '") + c + "'");
          }
          len = 1;
          if (c == '(' || c == '[' || c == '{') {
            brackets.push_back(c == '(' ? ')' : (c == '[' ? ']' : '}'));
          } else if (c == ')' || c == ']' || c == '}') {
            if (brackets.empty()) error_at(p, std::string("unexpected '") + c + "'");
            if (brackets.back() != c) {
              error_at(p,
                       std::string("unexpected '") + c + "', expected '" + brackets.back() + "'");
            }
            brackets.pop_back();
          }
        }
        t.text = src_.substr(p, len);
        p += len;
      }
      out_.push_back(std::move(t));
    }
  }

  // Digit runs may hold single underscores between digits, as in Python.
  std::size_t scan_digits(std::size_t p, std::string& digits) const {
    while (p < src_.size()) {
      if (is_digit(src_[p])) {
        digits.push_back(src_[p++]);
      } else if (src_[p] == '_' && p + 1 < src_.size() && is_digit(src_[p + 1]) &&
                 !digits.empty()) {
        ++p;
      } else {
        break;
      }
    }
    return p;
  }

  std::size_t lex_number(std::size_t p, Token& t) {
    const std::size_t n = src_.size();
    const bool after_dot = p > 0 && src_[p - 1] == '.';
    if (src_[p] == '0' && p + 1 < n &&
        std::string_view("bBoOxX").find(src_[p + 1]) != std::string_view::npos) {
      const int base = (src_[p + 1] | 0x20) == 'b' ? 2 : ((src_[p + 1] | 0x20) == 'o' ? 8 : 16);
      std::size_t q = p + 2;
      std::uint64_t v = 0;
      bool any = false;
      while (q < n) {
        if (src_[q] == '_' && q + 1 < n && hex_value(src_[q + 1]) >= 0 &&
            hex_value(src_[q + 1]) < base) {
          ++q;
          continue;
        }
        const int d = hex_value(src_[q]);
        if (d < 0 || d >= base) break;
        if (v > (static_cast<std::uint64_t>(INT64_MAX) - static_cast<unsigned>(d)) /
                    static_cast<unsigned>(base)) {
          error_at(p, "integer literal too large");
        }
        v = v * static_cast<unsigned>(base) + static_cast<unsigned>(d);
        any = true;
        ++q;
      }
      if (any) {
        t.type = TokenType::Integer;
        t.integer = static_cast<std::int64_t>(v);
        t.text = src_.substr(p, q - p);
        return q;
      }
    }
    std::string digits;
    std::size_t q = scan_digits(p, digits);
    std::string literal = digits;
    bool is_float = false;
    if (!after_dot) {
      std::size_t r = q;
      std::string frac;
      if (r + 1 < n && src_[r] == '.' && is_digit(src_[r + 1])) {
        r = scan_digits(r + 1, frac);
      }
      std::size_t e = r;
      std::string exp;
      if (e < n && (src_[e] == 'e' || src_[e] == 'E')) {
        std::size_t s = e + 1;
        std::string sign;
        if (s < n && (src_[s] == '+' || src_[s] == '-')) sign = src_[s++];
        if (s < n && is_digit(src_[s])) {
          s = scan_digits(s, exp);
          exp = std::string("e") + sign + exp;
          e = s;
        } else {
          exp.clear();
        }
      }
      if (!frac.empty() || !exp.empty()) {
        is_float = true;
        literal = digits + (frac.empty() ? "" : std::string(".") + frac) + exp;
        q = exp.empty() ? r : e;
      }
    }
    if (is_float) {
      t.type = TokenType::Float;
      t.number = std::strtod(literal.c_str(), nullptr);
    } else {
      // Python reads "012" as "0" followed by "12"; only 0, 00.. may start with a zero.
      if (digits.size() > 1 && digits[0] == '0') {
        std::size_t zeros = 0;
        while (zeros < digits.size() && digits[zeros] == '0') ++zeros;
        if (zeros != digits.size()) {
          q = p + 1;
          digits = "0";
        }
      }
      t.type = TokenType::Integer;
      std::uint64_t v = 0;
      for (char d : digits) {
        if (v > (static_cast<std::uint64_t>(INT64_MAX) - static_cast<unsigned>(d - '0')) / 10) {
          error_at(p, "integer literal too large");
        }
        v = v * 10 + static_cast<unsigned>(d - '0');
      }
      t.integer = static_cast<std::int64_t>(v);
    }
    t.text = src_.substr(p, q - p);
    return q;
  }

  // String literals are decoded with Python's unicode-escape rules; unknown escapes stay as
  // written.
  std::size_t lex_string(std::size_t p, Token& t) {
    const char quote = src_[p];
    std::size_t q = p + 1;
    std::u32string out;
    const std::size_t n = src_.size();
    while (true) {
      if (q >= n) error_at(p, "unexpected end of string literal");
      const char c = src_[q];
      if (c == quote) break;
      if (c != '\\') {
        std::size_t r = q + 1;
        while (r < n && (static_cast<unsigned char>(src_[r]) & 0xC0) == 0x80) ++r;
        for (char32_t cp : utf8_decode(std::string_view(src_).substr(q, r - q))) out.push_back(cp);
        q = r;
        continue;
      }
      if (q + 1 >= n) error_at(p, "unexpected end of string literal");
      const char e = src_[q + 1];
      q += 2;
      switch (e) {
        case '\n':
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case '"':
          out.push_back('"');
          break;
        case 'a':
          out.push_back(7);
          break;
        case 'b':
          out.push_back(8);
          break;
        case 'f':
          out.push_back(12);
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back(11);
          break;
        case 'x':
        case 'u':
        case 'U': {
          const std::size_t len = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
          char32_t v = 0;
          for (std::size_t k = 0; k < len; ++k) {
            const int d = q + k < n ? hex_value(src_[q + k]) : -1;
            if (d < 0) error_at(p, std::string("truncated \\") + e + " escape in string literal");
            v = v * 16 + static_cast<char32_t>(d);
          }
          if (v > 0x10FFFF) error_at(p, "illegal Unicode character in string literal");
          q += len;
          // A \ud83d\ude00 pair spells one astral character.
          if (!out.empty() && v >= 0xDC00 && v <= 0xDFFF && out.back() >= 0xD800 &&
              out.back() <= 0xDBFF) {
            out.back() = 0x10000 + ((out.back() - 0xD800) << 10) + (v - 0xDC00);
          } else {
            out.push_back(v);
          }
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            char32_t v = static_cast<char32_t>(e - '0');
            for (int k = 0; k < 2 && q < n && src_[q] >= '0' && src_[q] <= '7'; ++k) {
              v = v * 8 + static_cast<char32_t>(src_[q++] - '0');
            }
            out.push_back(v);
          } else {
            out.push_back('\\');
            q -= 1;  // re-read the escaped character as ordinary text
          }
      }
    }
    t.type = TokenType::String;
    t.text = utf8_encode(out);
    return q + 1;
  }

  void set_location(Token& t, std::size_t offset) {
    while (scanned_ < offset && scanned_ < src_.size()) {
      if (src_[scanned_] == '\n') {
        ++line_;
        line_start_ = scanned_ + 1;
      }
      ++scanned_;
    }
    // Tokens come in source order, except that a text token is located before the tag that
    // follows it; re-scan from the start if asked to go backwards.
    if (offset < scanned_) {
      scanned_ = 0;
      line_ = 1;
      line_start_ = 0;
      set_location(t, offset);
      return;
    }
    t.line = line_;
    t.column = static_cast<int>(offset - line_start_) + 1;
  }

  [[noreturn]] void error_at(std::size_t offset, const std::string& message) {
    Token t{TokenType::End, {}};
    set_location(t, offset);
    throw TemplateError(message, t.line, t.column);
  }

  std::string src_;
  std::size_t pos_ = 0;
  bool line_starting_ = true;
  std::vector<Token> out_;
  std::size_t scanned_ = 0;
  int line_ = 1;
  std::size_t line_start_ = 0;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) {
  return Lexer(source).run();
}

}  // namespace redhare::jinja
