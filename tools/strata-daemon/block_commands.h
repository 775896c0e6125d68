// The daemon's QMP commands: QEMU's names and argument shapes over an Engine.
//
//   query-version, query-commands, quit,
//   blockdev-add (BlockdevOptions), blockdev-del {node-name}, query-named-block-nodes {flat?}
//
// Every command checks its arguments completely before it changes anything, with QEMU's texts
// ("Parameter 'x' is unexpected", "Parameter 'node-name' is missing").
//
// Threading: event loop thread only.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "qmp_server.h"
#include "strata/engine.h"

namespace strata::daemon {

class BlockCommands final : public qmp::CommandSet {
 public:
  // `version` is query-version's answer; `on_quit` runs, posted to the loop, after `quit`
  // has been answered.
  BlockCommands(Engine& engine, qmp::Json version, std::function<void()> on_quit);

  std::vector<std::string> names() const override;
  bool has(std::string_view name) const override;
  Task<Result<qmp::Json>> run(std::string name, qmp::Json arguments) override;

 private:
  Engine* engine_;
  qmp::Json version_;
  std::function<void()> on_quit_;
};

// query-named-block-nodes' entry for one node (QEMU's BlockDeviceInfo keys, plus Strata's
// auto-read-only and x-storage-read-write). Without `flat`, image carries the backing chain
// as nested backing-image entries.
qmp::Json node_info(Node& node, bool flat);

}  // namespace strata::daemon
