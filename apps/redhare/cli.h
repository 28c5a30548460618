// Helpers shared by the subcommands' argument parsing.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace redhare::app {

// Parses args (args[0] is the subcommand) with CLI11; returns -1 to continue, else an exit code
// (0 after --help, 2 after a usage error, with the message printed).
inline int parse_args(CLI::App& app, const std::vector<std::string>& args) {
  std::vector<std::string> rev(args.rbegin(), args.rend() - 1);  // CLI11 takes them reversed
  try {
    app.parse(rev);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return -1;
}

}  // namespace redhare::app
