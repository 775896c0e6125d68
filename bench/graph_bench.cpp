// Graph operations on a long chain: what a management tool pays for adding a node on top of a
// chain of 1000 nodes, and for a read-only reopen of one node in it (what a commit or stream job
// does to its base at start and end). Both should stay far below a millisecond: the permission
// refresh visits only nodes whose inputs change.
//
// The chain is null-co at the bottom with raw filters stacked on it (n0 <- n1 <- ... <- n999),
// built with the built-in drivers, as a user would with blockdev-add.
//
//   strata_graph_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"

namespace strata {
namespace {

constexpr int kChain = 1000;

std::string chain_name(int i) { return "n" + std::to_string(i); }

// An engine holding the chain; aborts if building it fails (a benchmark has no error path).
struct Chain {
  EventLoop loop;
  std::unique_ptr<Engine> engine = std::make_unique<Engine>(loop, builtin_drivers());

  Chain() {
    add({{"driver", "null-co"}, {"node-name", chain_name(0)}, {"size", 1 << 20}});
    for (int i = 1; i < kChain; ++i) {
      add({{"driver", "raw"}, {"node-name", chain_name(i)}, {"file", chain_name(i - 1)}});
    }
  }
  Node* add(nlohmann::json options) {
    auto node = run_sync(loop, engine->add_node(std::move(options)));
    if (!node) std::abort();
    return *node;
  }
  Node& at(int i) { return *engine->find_node(chain_name(i)); }
};

void BM_AddNodeOnTopOfChain(benchmark::State& state) {
  Chain chain;
  const nlohmann::json top = {
      {"driver", "raw"}, {"node-name", "top"}, {"file", chain_name(kChain - 1)}};
  for (auto _ : state) {
    chain.add(top);
    state.PauseTiming();
    if (!run_sync(chain.loop, chain.engine->delete_node("top"))) std::abort();
    state.ResumeTiming();
  }
}
BENCHMARK(BM_AddNodeOnTopOfChain)->Unit(benchmark::kMicrosecond);

// Toggles read-only on node `state.range(0)` of the chain (0 is the bottom). With a reader on
// top, as a running guest would be.
void BM_ReopenReadOnlyInChain(benchmark::State& state) {
  Chain chain;
  auto reader = chain.engine->attach_backend(chain.at(kChain - 1), "guest", Perm::kConsistentRead,
                                             Perm::kAll);
  if (!reader) std::abort();
  Node& node = chain.at(static_cast<int>(state.range(0)));
  bool read_only = false;
  for (auto _ : state) {
    read_only = !read_only;
    if (!run_sync(chain.loop, chain.engine->set_read_only(node, read_only))) std::abort();
  }
}
BENCHMARK(BM_ReopenReadOnlyInChain)
    ->Arg(0)
    ->Arg(kChain / 2)
    ->Arg(kChain - 1)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace strata

BENCHMARK_MAIN();
