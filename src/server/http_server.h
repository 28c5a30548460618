// redhare serve: the OpenAI-compatible HTTP server.
#pragma once

#include "server/settings.h"

namespace redhare {

// Binds, loads the model (answering /health with 503 meanwhile), serves until SIGTERM or SIGINT,
// then stops accepting, lets running requests finish (up to serve.drain_timeout_s) and returns
// the process exit code. The caller must have blocked SIGTERM and SIGINT in every thread
// (block_shutdown_signals() before any thread starts).
int run_server(const Settings& settings);
void block_shutdown_signals();

}  // namespace redhare
