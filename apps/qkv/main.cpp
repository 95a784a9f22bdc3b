// qkv <verb> [flags]: the entry point. Errors become one line on stderr and exit code 1.
#include <cstdio>
#include <exception>
#include <string>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/core/parallel.h"

namespace qkv::app {
void apply_threads(int threads) {
  QKV_CHECK(threads >= 0 && threads <= 1024, "--threads must be in [0, 1024], got {}", threads);
  set_num_threads(threads);
}
}  // namespace qkv::app

int main(int argc, char** argv) {
  CLI::App app{"qkv: train, run and inspect Transformer models on the CPU", "qkv"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "qkv 0.1.0");
  qkv::app::add_train(app);
  qkv::app::add_generate(app);
  qkv::app::add_logits(app);
  qkv::app::add_bench(app);
  qkv::app::add_tokenize(app);
  qkv::app::add_init(app);
  qkv::app::add_quantize(app);
  qkv::app::add_perplexity(app);
  qkv::app::add_inspect(app);
  qkv::app::add_experiment(app);
  qkv::app::add_eval(app);
  qkv::app::add_finetune(app);
  qkv::app::add_synth(app);
  if (argc >= 2 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (const auto* sub : app.get_subcommands({})) {
      known = known || sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "qkv: error: unknown verb '%s' (expected one of: %s)\n", argv[1],
                   names.c_str());
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // e.g. 130 after Ctrl-C, once the checkpoint is written
  } catch (const CLI::ParseError& e) {
    std::string msg = e.what();
    std::fprintf(stderr, "qkv: error: %s (see qkv --help)\n", msg.c_str());
    return 1;
  } catch (const qkv::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "qkv: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "qkv: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "qkv: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
