// Drawing the live block graph as Graphviz DOT.
//
// The picture comes from two QMP replies: x-debug-query-block-graph (QEMU's shape: nodes
// [{id, type, name}], edges [{parent, child, name, perm[], shared-perm[]}]) and
// query-named-block-nodes with flat=true, which adds each driver node's driver ("drv") and
// read-only state ("ro"). A node is labelled with its name, its driver (or its type for block
// backends and jobs) and ro/rw; an edge, drawn parent above child, with the child's name, its
// role when the server reports one (a "role" key, string or list: QEMU 7.2 has none) and the
// permissions the parent takes and shares on it.
//
// Thread safety: pure functions, except render_svg, which runs `dot`.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "strata/result.h"

namespace strata::qmp_client {

// DOT text for the graph. `graph` is the "return" value of x-debug-query-block-graph and
// `named_nodes` that of query-named-block-nodes (flat). EPROTO if `graph` lacks nodes or edges.
Result<std::string> graph_to_dot(const nlohmann::json& graph, const nlohmann::json& named_nodes);

// Runs Graphviz's `dot -Tsvg` on `dot_text`, writing the SVG to `output` (stdout when empty).
// ENOENT-like failures come back as errors naming `dot`.
Result<void> render_svg(const std::string& dot_text, const std::string& output);

}  // namespace strata::qmp_client
