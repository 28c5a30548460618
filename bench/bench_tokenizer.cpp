// Encode throughput of redhare's tokenizer, single thread, one document at a time, on the mixed
// text written by tools/tokenizer/bench_reference.py (which measures the Hugging Face library on
// the same documents). Run that script first, then:
//   bench_tokenizer [tokenizer-name, default llama3] [rounds, default 3]
// from the repository root (or with REDHARE_SOURCE_DIR set).
//
// Tokenization is branchy integer work with no useful FLOP or bandwidth bound; the figure to
// compare against is the reference library's MB/s, printed by the script.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/tokenizer.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const std::string name = argc > 1 ? argv[1] : "llama3";
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 3;
  const char* env = std::getenv("REDHARE_SOURCE_DIR");
  const fs::path root = env ? fs::path(env) : fs::current_path();
  const fs::path docs_path = root / ".cache" / "bench" / "tokenizer_docs.json";
  try {
    std::ifstream in(docs_path);
    if (!in)
      redhare::fail(docs_path.string(), ": missing; run tools/tokenizer/bench_reference.py first");
    std::stringstream ss;
    ss << in.rdbuf();
    const auto docs = nlohmann::json::parse(ss.str()).get<std::vector<std::string>>();
    std::size_t bytes = 0;
    for (const auto& d : docs) bytes += d.size();

    const auto t_load = std::chrono::steady_clock::now();
    const auto tok = redhare::Tokenizer::from_dir(root / ".cache" / "tokenizers" / name);
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();

    double best = 1e30, first = 0;
    std::size_t tokens = 0;
    for (int r = 0; r < rounds; ++r) {
      tokens = 0;
      const auto t0 = std::chrono::steady_clock::now();
      for (const auto& d : docs) tokens += tok.encode(d, false).size();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r == 0) first = s;
      best = std::min(best, s);
    }
    std::printf("redhare %s: %zu docs, %.2f MB, %zu tokens, load %.2f s\n", name.c_str(),
                docs.size(), bytes / 1e6, tokens, load_s);
    std::printf("  first round (cold word cache): %.3f s = %.2f MB/s\n", first,
                bytes / 1e6 / first);
    std::printf("  best of %d: %.3f s = %.2f MB/s single thread\n", rounds, best,
                bytes / 1e6 / best);
  } catch (const redhare::Error& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
