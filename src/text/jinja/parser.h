// Builds the statement tree from tokens, following jinja2's grammar and operator precedence.
#pragma once

#include <vector>

#include "text/jinja/ast.h"
#include "text/jinja/lexer.h"

namespace redhare::jinja {

// Throws TemplateError with the offending token's line and column.
Program parse_tokens(std::vector<Token> tokens);

}  // namespace redhare::jinja
