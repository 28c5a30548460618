// Real models' chat templates against transformers' apply_chat_template output, recorded by
// tools/chat_templates/make_fixtures.py (see tools/chat_templates/SOURCES.md for the templates).
#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "fixtures.h"
#include "text/jinja/chat_template.h"

namespace redhare::jinja {
namespace {

const nlohmann::ordered_json& cases() {
  return test::load_fixture("chat_cases.json")["cases"];
}

const nlohmann::ordered_json& conversations() {
  static const nlohmann::ordered_json c = [] {
    const std::string text = test::read_text(test::chat_fixture_path("conversations.json"));
    return text.empty() ? nlohmann::ordered_json::object() : nlohmann::ordered_json::parse(text);
  }();
  return c;
}

std::vector<std::size_t> case_indices() {
  std::vector<std::size_t> out(cases().size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = i;
  return out;
}

class ChatTemplateCase : public ::testing::TestWithParam<std::size_t> {};

TEST_P(ChatTemplateCase, MatchesTransformers) {
  const auto& c = cases()[GetParam()];
  const std::string tmpl = test::read_text(
      test::chat_fixture_path("templates/" + c["template"].get<std::string>() + ".jinja"));
  ASSERT_FALSE(tmpl.empty());
  const auto& conv = conversations()["conversations"][c["conversation"].get<std::string>()];
  const nlohmann::ordered_json tools =
      conv.value("tools", false) ? conversations()["tools"] : nlohmann::ordered_json();
  auto render = [&] {
    return apply_chat_template(tmpl, conv["messages"], tools,
                               c["add_generation_prompt"].get<bool>(), c["kwargs"],
                               c["bos_token"].get<std::string>(), c["eos_token"].get<std::string>(),
                               test::fixture_render_options("chat_cases.json"));
  };
  if (c.contains("expected")) {
    std::string out;
    ASSERT_NO_THROW(out = render());
    EXPECT_EQ(out, c["expected"].get<std::string>());
    return;
  }
  const std::string jinja_error = c["error"].get<std::string>();
  try {
    render();
    ADD_FAILURE() << "rendered, but transformers failed with " << jinja_error;
  } catch (const TemplateError& e) {
    if (jinja_error.rfind("TemplateError: ", 0) == 0) {
      EXPECT_TRUE(e.raised());
      EXPECT_EQ(e.message(), jinja_error.substr(15));
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<std::size_t>& info) {
  const auto& c = cases()[info.param];
  std::string name = c["template"].get<std::string>() + "_" + c["conversation"].get<std::string>() +
                     (c["add_generation_prompt"].get<bool>() ? "_gen" : "_nogen");
  for (auto it = c["kwargs"].begin(); it != c["kwargs"].end(); ++it)
    name += "_" + it.key() + "_" + it.value().dump();
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name + "_" + std::to_string(info.param);
}

INSTANTIATE_TEST_SUITE_P(Transformers, ChatTemplateCase, ::testing::ValuesIn(case_indices()),
                         case_name);

TEST(ChatFixtures, CoverTheModelFamilies) {
  std::set<std::string> templates;
  for (const auto& c : cases()) {
    if (c.contains("expected")) templates.insert(c["template"].get<std::string>());
  }
  for (const char* family :
       {"llama-3.1", "llama-3.2", "qwen2.5", "qwen3", "deepseek-r1-distill-qwen", "deepseek-v3.1",
        "mistral-nemo", "mistral-small-3.2", "glm-4.6", "chatglm4", "smollm2", "gemma-2",
        "gemma-7b", "llama-2-style-mistral-v0.2", "gpt-oss"}) {
    EXPECT_TRUE(templates.count(family)) << family;
  }
}

TEST(ChatTemplate, EmptyConversationIsAnError) {
  EXPECT_THROW(apply_chat_template("{{ messages }}", nlohmann::ordered_json::array(), nullptr, true,
                                   nullptr, "", ""),
               Error);
}

TEST(ChatTemplate, NoneValuedKeysAreDroppedAndReasoningAliased) {
  const auto messages = nlohmann::ordered_json::parse(
      R"([{"role": "assistant", "content": null, "reasoning": "hmm"}])");
  const std::string out = apply_chat_template(
      "{% for m in messages %}{{ m.content is defined }}|{{ m|tojson }}{% endfor %}", messages,
      nullptr, false, nullptr, "", "");
  EXPECT_EQ(
      out,
      R"(False|{"thinking": "hmm", "role": "assistant", "reasoning": "hmm", "reasoning_content": "hmm"})");
}

class ModelDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("redhare_chat_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  std::filesystem::path dir_;
};

TEST_F(ModelDir, PrefersChatTemplateJinja) {
  write("chat_template.jinja", "from file");
  write("tokenizer_config.json", R"({"chat_template": "from config"})");
  EXPECT_EQ(load_chat_template_from_dir(dir_.string()), "from file");
}

TEST_F(ModelDir, ReadsStringFromTokenizerConfig) {
  write("tokenizer_config.json",
        R"({"chat_template": "{{ x }}", "bos_token": {"content": "<s>"}, "eos_token": "</s>"})");
  EXPECT_EQ(load_chat_template_from_dir(dir_.string()), "{{ x }}");
  const auto config =
      nlohmann::ordered_json::parse(test::read_text((dir_ / "tokenizer_config.json").string()));
  EXPECT_EQ(special_token_text(config, "bos_token"), "<s>");
  EXPECT_EQ(special_token_text(config, "eos_token"), "</s>");
  EXPECT_EQ(special_token_text(config, "pad_token"), "");
}

TEST_F(ModelDir, PicksDefaultFromTemplateList) {
  write(
      "tokenizer_config.json",
      R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  EXPECT_EQ(load_chat_template_from_dir(dir_.string()), "D");
}

TEST_F(ModelDir, MissingTemplateIsAClearError) {
  EXPECT_THROW(load_chat_template_from_dir(dir_.string()), Error);
  write("tokenizer_config.json", R"({"bos_token": "<s>"})");
  try {
    load_chat_template_from_dir(dir_.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no chat_template"), std::string::npos);
  }
  write("tokenizer_config.json", R"({"chat_template": [{"name": "rag", "template": "R"}]})");
  EXPECT_THROW(load_chat_template_from_dir(dir_.string()), Error);
  write("tokenizer_config.json", "{not json");
  EXPECT_THROW(load_chat_template_from_dir(dir_.string()), Error);
}

}  // namespace
}  // namespace redhare::jinja
