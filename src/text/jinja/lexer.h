// Splits a template into text and tag tokens the way jinja2's lexer does under transformers'
// settings (trim_blocks, lstrip_blocks, keep_trailing_newline off), so that the whitespace the
// template produces is exactly jinja2's.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace redhare::jinja {

enum class TokenType : std::uint8_t {
  Text,
  VariableBegin,  // {{
  VariableEnd,    // }}
  BlockBegin,     // {%
  BlockEnd,       // %}
  Name,
  String,
  Integer,
  Float,
  Operator,
  End,
};

struct Token {
  TokenType type;
  std::string text;  // Text: the data; Name/Operator: the spelling; String: the unescaped value
  std::int64_t integer = 0;
  double number = 0;
  int line = 1;
  int column = 1;
};

// Throws TemplateError (see template.h) with line and column on malformed input.
std::vector<Token> tokenize(std::string_view source);

}  // namespace redhare::jinja
