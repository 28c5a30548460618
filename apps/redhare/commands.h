// Subcommands of the redhare binary. Each takes the arguments after the subcommand name
// (args[0] is the subcommand itself) and returns the process exit code.
#pragma once

#include <string>
#include <vector>

namespace redhare::app {

int cmd_generate(const std::vector<std::string>& args);
int cmd_info(const std::vector<std::string>& args);
int cmd_tokenize(const std::vector<std::string>& args);
int cmd_chat_template(const std::vector<std::string>& args);
int cmd_serve(const std::vector<std::string>& args);
int cmd_bench(const std::vector<std::string>& args);
int cmd_convert(const std::vector<std::string>& args);

}  // namespace redhare::app
