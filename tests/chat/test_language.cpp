// Each language feature against jinja2's own output, recorded by
// tools/chat_templates/make_fixtures.py from tools/chat_templates/language_cases.py.
#include <gtest/gtest.h>

#include "fixtures.h"
#include "text/jinja/template.h"

namespace redhare::jinja {
namespace {

const nlohmann::ordered_json& cases() {
  return test::load_fixture("language_cases.json")["cases"];
}

std::vector<std::size_t> case_indices() {
  std::vector<std::size_t> out(cases().size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = i;
  return out;
}

class LanguageCase : public ::testing::TestWithParam<std::size_t> {};

TEST_P(LanguageCase, MatchesJinja2) {
  const auto& c = cases()[GetParam()];
  const std::string tmpl = c["template"].get<std::string>();
  SCOPED_TRACE("template: " + tmpl);
  if (c.contains("expected")) {
    std::string out;
    ASSERT_NO_THROW(out = Template::parse(tmpl).render(
                        c["context"], test::fixture_render_options("language_cases.json")))
        << c["name"];
    EXPECT_EQ(out, c["expected"].get<std::string>());
    return;
  }
  // jinja2 failed on this template; so must we, with a TemplateError (never a crash or output).
  const std::string jinja_error = c["error"].get<std::string>();
  try {
    Template::parse(tmpl).render(c["context"]);
    ADD_FAILURE() << "rendered, but jinja2 failed with " << jinja_error;
  } catch (const TemplateError& e) {
    if (jinja_error.rfind("TemplateError: ", 0) == 0) {
      // raise_exception(): the template's own message comes through intact.
      EXPECT_TRUE(e.raised());
      EXPECT_EQ(e.message(), jinja_error.substr(15));
    } else {
      EXPECT_FALSE(e.raised()) << e.what();
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<std::size_t>& info) {
  return cases()[info.param]["name"].get<std::string>();
}

INSTANTIATE_TEST_SUITE_P(Jinja2, LanguageCase, ::testing::ValuesIn(case_indices()), case_name);

TEST(LanguageFixtures, ArePresent) {
  EXPECT_GE(cases().size(), 100u);
}

TEST(TemplateErrors, CarryLineAndColumn) {
  try {
    Template::parse("line one\n{% if x %}\n  {{ 1 + }}\n{% endif %}");
    FAIL() << "expected a syntax error";
  } catch (const TemplateError& e) {
    EXPECT_EQ(e.line(), 3);
    EXPECT_EQ(e.column(), 10);
    EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos);
  }
  try {
    Template::parse("a\nb {{ 'x' + 1 }}").render(nlohmann::ordered_json::object());
    FAIL() << "expected a type error";
  } catch (const TemplateError& e) {
    EXPECT_EQ(e.line(), 2);
    EXPECT_FALSE(e.raised());
  }
}

TEST(TemplateLimits, StepBudgetStopsRunawayLoops) {
  const Template t = Template::parse(
      "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
  RenderOptions opts;
  opts.max_steps = 100000;
  EXPECT_THROW(t.render(nlohmann::ordered_json::object(), opts), TemplateError);
}

TEST(TemplateLimits, OutputSizeIsCapped) {
  const Template t = Template::parse(
      "{% set ns = namespace(s='xx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% "
      "endfor %}{{ ns.s }}");
  RenderOptions opts;
  opts.max_output_bytes = 1 << 20;
  EXPECT_THROW(t.render(nlohmann::ordered_json::object(), opts), TemplateError);
  EXPECT_THROW(
      Template::parse("{{ 'x' * 100000000000 }}").render(nlohmann::ordered_json::object(), opts),
      TemplateError);
}

TEST(TemplateLimits, MacroRecursionDepthIsBounded) {
  const Template t = Template::parse("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_THROW(t.render(nlohmann::ordered_json::object()), TemplateError);
}

TEST(TemplateLimits, DeepNestingIsASyntaxErrorNotACrash) {
  EXPECT_THROW(
      Template::parse("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"),
      TemplateError);
  std::string nested;
  for (int i = 0; i < 3000; ++i) nested += "{% if true %}";
  EXPECT_THROW(Template::parse(nested), TemplateError);
}

TEST(TemplateContext, MustBeAnObject) {
  EXPECT_THROW(Template::parse("x").render(nlohmann::ordered_json::array()), TemplateError);
}

}  // namespace
}  // namespace redhare::jinja

namespace redhare::jinja {
namespace {

TEST(TemplateLimits, LongOperatorChainsAreBoundedButOrdinaryOnesWork) {
  std::string chain = "{{ 1";
  for (int i = 0; i < 150; ++i) chain += " ~ 1";
  EXPECT_EQ(Template::parse(chain + " }}").render(nlohmann::ordered_json::object()),
            std::string(151, '1'));
  std::string long_chain = "{{ 1";
  for (int i = 0; i < 20000; ++i) long_chain += " ~ 1";
  EXPECT_THROW(Template::parse(long_chain + " }}"), TemplateError);
  std::string filters = "{{ 'x'";
  for (int i = 0; i < 20000; ++i) filters += "|upper";
  EXPECT_THROW(Template::parse(filters + " }}"), TemplateError);
}

TEST(TemplateLimits, ValueNestingIsBounded) {
  const Template t = Template::parse(
      "{% set ns = namespace(x=1) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}{% endfor "
      "%}{{ ns.x }}");
  EXPECT_THROW(t.render(nlohmann::ordered_json::object()), TemplateError);
}

}  // namespace
}  // namespace redhare::jinja
