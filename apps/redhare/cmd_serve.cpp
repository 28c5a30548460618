// redhare serve: the OpenAI-compatible server. Settings come from the schema's defaults, then
// --config FILE, then section.key=value arguments, in that order.
#include <cstdio>
#include <cstring>

#include "apps/redhare/commands.h"
#include "core/error.h"
#include "server/http_server.h"
#include "server/settings.h"

namespace redhare::app {

int cmd_serve(const std::vector<std::string>& args) {
  Settings s;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::printf(
          "usage: redhare serve [--config FILE] [section.key=value ...]\n\n"
          "Serves a model over an OpenAI-compatible HTTP API:\n"
          "  POST /v1/chat/completions, POST /v1/completions, GET /v1/models,\n"
          "  POST /tokenize, POST /detokenize, GET /health, GET /metrics, GET /version\n\n"
          "example: redhare serve models.ckpt_dir=/models/Qwen3-8B serve.port=8000\n\n%s",
          Settings::help_text().c_str());
      return 0;
    }
    if (a == "--config") {
      if (i + 1 >= args.size()) fail("--config needs a file");
      s.load_yaml_file(args[++i]);
    } else if (a.rfind("--config=", 0) == 0) {
      s.load_yaml_file(a.substr(9));
    } else if (a.rfind("--model=", 0) == 0) {
      s.apply_override("models.ckpt_dir=" + a.substr(8));
    } else if (a == "--model") {
      if (i + 1 >= args.size()) fail("--model needs a directory");
      s.apply_override("models.ckpt_dir=" + args[++i]);
    } else if (a.find('=') != std::string::npos && a[0] != '-') {
      s.apply_override(a);
    } else {
      fail("unexpected argument '", a, "' (settings are section.key=value; see --help)");
    }
  }
  block_shutdown_signals();
  return run_server(s);
}

}  // namespace redhare::app
