// The query commands: query-named-block-nodes, query-block and x-debug-query-block-graph.
#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "block_commands.h"
#include "strata/block_backend.h"
#include "strata/child.h"
#include "strata/dirty_bitmap.h"
#include "strata/node.h"
#include "strata/options.h"

namespace strata::daemon {
namespace {

using qmp::Json;

std::string_view detect_zeroes_name(DetectZeroes mode) {
  switch (mode) {
    case DetectZeroes::kOn:
      return "on";
    case DetectZeroes::kUnmap:
      return "unmap";
    case DetectZeroes::kOff:
      break;
  }
  return "off";
}

Node* backing_of(Node& node) {
  Child* backing = node.child("backing");
  return backing ? &backing->node() : nullptr;
}

Json image_info(Node& node, bool flat) {
  Json image = Json::object();
  image["virtual-size"] = node.size();
  image["filename"] = node.filename();
  image["format"] = node.driver_class().name;
  // QEMU's backing-filename is the name in the image header, which the engine does not expose;
  // it is left out rather than guessed from the backing node.
  Node* backing = backing_of(node);
  if (backing && !flat) image["backing-image"] = image_info(*backing, false);
  return image;
}

// QEMU lists permission names from the highest bit down (its list is built by prepending).
Json perm_list(Perm perm) {
  Json list = Json::array();
  for (Perm bit : {Perm::kResize, Perm::kWriteUnchanged, Perm::kWrite, Perm::kConsistentRead}) {
    if (has_all(perm, bit)) list.push_back(perm_qapi_name(bit));
  }
  return list;
}

// x-debug-query-block-graph as QEMU builds it: users first, then nodes in creation order; an
// object gets its id (from 1) when it is first met, as a graph node or as an edge's child; each
// list is built by prepending, so it comes out in reverse.
class GraphBuilder {
 public:
  uint64_t id(const void* object) {
    auto [it, added] = ids_.try_emplace(object, ids_.size() + 1);
    return it->second;
  }
  void add_node(const void* object, std::string_view type, std::string_view name) {
    nodes_.push_back(Json{{"id", id(object)}, {"type", type}, {"name", name}});
  }
  void add_edge(const void* parent, const Child& edge) {
    edges_.push_back(Json{{"parent", id(parent)},
                          {"child", id(&edge.node())},
                          {"name", edge.name()},
                          {"perm", perm_list(edge.perm())},
                          {"shared-perm", perm_list(edge.shared())}});
  }
  Json finish() {
    std::reverse(nodes_.begin(), nodes_.end());
    std::reverse(edges_.begin(), edges_.end());
    return Json{{"nodes", std::move(nodes_)}, {"edges", std::move(edges_)}};
  }

 private:
  std::map<const void*, uint64_t> ids_;
  Json nodes_ = Json::array();
  Json edges_ = Json::array();
};

// Nodes in the order QEMU registers them (observed with qemu-storage-daemon 7.2): a format
// node's inline `file` is opened, and registered, before the node itself; every other child
// comes after its parent, as in Strata's creation order.
void registration_order(Node* node, std::set<Node*>& seen, std::vector<Node*>& order) {
  if (!seen.insert(node).second) return;
  Child* file = node->child("file");
  if (file != nullptr && file->node().inherits_from() == node) {
    registration_order(&file->node(), seen, order);
  }
  order.push_back(node);
}

}  // namespace

Json node_info(Node& node, bool flat) {
  NodeAccess access = node.access();
  const NodeOptions& options = node.options();
  int depth = 0;
  for (Node* n = backing_of(node); n; n = backing_of(*n)) ++depth;
  Json info = Json::object();
  info["file"] = node.filename();
  info["node-name"] = node.name();
  info["ro"] = access.read_only;
  info["drv"] = node.driver_class().name;
  // Observed from QEMU 7.2: the backing node's filename, also for a backing given by reference
  // (while image.backing-filename, the header's name, is absent then).
  if (Node* backing = backing_of(node)) info["backing_file"] = backing->filename();
  info["backing_file_depth"] = depth;
  info["encrypted"] = false;
  info["detect_zeroes"] = detect_zeroes_name(options.detect_zeroes);
  // Strata has no I/O throttling on nodes: QEMU's limits are reported as "none" (0).
  for (const char* key : {"bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"}) info[key] = 0;
  info["image"] = image_info(node, flat);
  // writeback is a property of the device in front of the node; a node is always writeback.
  info["cache"] = Json{
      {"writeback", true}, {"direct", options.cache_direct}, {"no-flush", options.cache_no_flush}};
  info["write_threshold"] = 0;
  // The bitmaps jobs keep (an active commit's on its top); unnamed, as QEMU lists them.
  if (!node.dirty_bitmaps().empty()) {
    Json bitmaps = Json::array();
    for (const DirtyBitmap* bitmap : node.dirty_bitmaps()) {
      bitmaps.push_back(Json{{"recording", true},
                             {"persistent", false},
                             {"busy", false},
                             {"granularity", bitmap->granularity()},
                             {"count", bitmap->count()}});
    }
    info["dirty-bitmaps"] = std::move(bitmaps);
  }
  info["auto-read-only"] = access.auto_read_only;
  info["x-storage-read-write"] = access.storage_read_write;
  return info;
}

Task<Result<Json>> query_named_block_nodes(BlockCommands& commands, Json arguments) {
  nlohmann::json args = nlohmann::json::parse(arguments.dump());
  OptionReader reader(args, OptionSyntax::kJson);
  auto flat = reader.get_bool("flat");
  if (!flat) co_return flat.error();
  if (auto done = reader.finish(); !done) co_return done.error();
  Json list = Json::array();
  for (Node* node : commands.engine().nodes()) {
    // Automatically named nodes ("#block1") are listed too, as QEMU does.
    list.push_back(node_info(*node, flat->value_or(false)));
  }
  co_return list;
}

// QEMU lists its guest devices (named BlockBackends); qemu-storage-daemon has none and answers
// [], and so does Strata, whose users (exports, jobs) are not devices.
Task<Result<Json>> query_block(BlockCommands&, Json arguments) {
  if (auto none = expect_no_arguments(arguments); !none) co_return none.error();
  co_return Json::array();
}

Json block_graph(Engine& engine) {
  GraphBuilder graph;
  for (BlockBackend* user : engine.backends()) {
    graph.add_node(user, "block-backend", user->name());
    if (user->has_root()) graph.add_edge(user, user->root());
  }
  std::set<Node*> seen;
  std::vector<Node*> order;
  for (Node* node : engine.nodes()) registration_order(node, seen, order);
  for (Node* node : order) {
    graph.add_node(node, "block-driver", node->name());
    // QEMU keeps a node's children newest first.
    auto children = node->children();
    for (auto edge = children.rbegin(); edge != children.rend(); ++edge) {
      graph.add_edge(node, **edge);
    }
  }
  return graph.finish();
}

Task<Result<Json>> query_block_graph(BlockCommands& commands, Json arguments) {
  if (auto none = expect_no_arguments(arguments); !none) co_return none.error();
  co_return block_graph(commands.engine());
}

}  // namespace strata::daemon
