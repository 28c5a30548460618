// redhare: one binary, one subcommand per job.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "apps/redhare/commands.h"
#include "core/error.h"

namespace {

void usage() {
  std::fputs(
      "usage: redhare <command> [options]\n"
      "\n"
      "commands:\n"
      "  serve           OpenAI-compatible HTTP server\n"
      "  generate        greedy generation from token ids (or a text prompt)\n"
      "  info            architecture, parameter count, dtypes and memory of a model\n"
      "  tokenize        text to token ids with a model's tokenizer\n"
      "  chat-template   render a conversation with a model's chat template\n"
      "  bench           serving benchmark: TTFT, TPOT, ITL, throughput (HTTP or in-process)\n"
      "  convert         rewrite a checkpoint with block-scaled FP8 projection weights\n"
      "\n"
      "'redhare <command> --help' lists a command's options.\n",
      stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    usage();
    return argc < 2 ? 2 : 0;
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  const std::string& cmd = args[0];
  try {
    if (cmd == "serve") return redhare::app::cmd_serve(args);
    if (cmd == "generate") return redhare::app::cmd_generate(args);
    if (cmd == "info") return redhare::app::cmd_info(args);
    if (cmd == "tokenize") return redhare::app::cmd_tokenize(args);
    if (cmd == "chat-template") return redhare::app::cmd_chat_template(args);
    if (cmd == "bench") return redhare::app::cmd_bench(args);
    if (cmd == "convert") return redhare::app::cmd_convert(args);
    if (cmd == "--version" || cmd == "version") {
      std::puts("redhare " REDHARE_VERSION);
      return 0;
    }
  } catch (const redhare::Error& e) {
    std::fprintf(stderr, "redhare %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "redhare %s: %s\n", cmd.c_str(), e.what());
    return 70;
  }
  std::fprintf(stderr, "redhare: unknown command '%s'\n\n", cmd.c_str());
  usage();
  return 2;
}
