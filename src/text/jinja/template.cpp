#include "text/jinja/template.h"

#include "text/jinja/lexer.h"
#include "text/jinja/parser.h"
#include "text/jinja/runtime.h"

namespace redhare::jinja {

namespace {

std::string located(const std::string& message, int line, int column, bool raised) {
  if (raised) return detail::concat("chat template raised an error (line ", line, "): ", message);
  return detail::concat("chat template error at line ", line, ", column ", column, ": ", message);
}

}  // namespace

TemplateError::TemplateError(const std::string& message, int line, int column, bool raised)
    : Error(located(message, line, column, raised)),
      message_(message),
      line_(line),
      column_(column),
      raised_(raised) {}

Template Template::parse(std::string_view source) {
  auto program = std::make_shared<Program>(parse_tokens(tokenize(source)));
  return Template(std::move(program));
}

std::string Template::render(const nlohmann::ordered_json& context,
                             const RenderOptions& options) const {
  Runtime runtime(*program_, options);
  try {
    return runtime.render(context);
  } catch (const TemplateError&) {
    throw;
  } catch (const TemplateRaise& e) {
    throw TemplateError(e.what(), 0, 0, true);
  } catch (const Error& e) {
    throw TemplateError(e.what(), 0, 0);
  }
}

}  // namespace redhare::jinja
