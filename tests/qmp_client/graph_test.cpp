// Specification of the DOT drawing of a block graph (graph.h), from replies shaped as
// qemu-storage-daemon 7.2 gives them.
#include "graph.h"

#include <gtest/gtest.h>

namespace strata::qmp_client {
namespace {

using nlohmann::json;

const json kGraph = json::parse(R"({
  "edges": [{"name": "file", "parent": 2, "child": 1,
             "perm": ["resize", "write", "consistent-read"],
             "shared-perm": ["write-unchanged", "consistent-read"]},
            {"name": "root", "parent": 3, "child": 2, "perm": [], "shared-perm": ["write"]}],
  "nodes": [{"name": "q\"0", "type": "block-driver", "id": 2},
            {"name": "f0", "type": "block-driver", "id": 1},
            {"name": "", "type": "block-backend", "id": 3}]})");

const json kNamed = json::parse(R"([
  {"node-name": "q\"0", "drv": "qcow2", "ro": false},
  {"node-name": "f0", "drv": "file", "ro": true}])");

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(QmpGraph, NodesShowNameDriverAndReadOnlyState) {
  auto dot = graph_to_dot(kGraph, kNamed);
  ASSERT_TRUE(dot) << dot.error().message();
  EXPECT_TRUE(contains(*dot, "n2 [shape=box, label=\"q\\\"0\\nqcow2\\nrw\"];")) << *dot;
  EXPECT_TRUE(contains(*dot, "n1 [shape=box, label=\"f0\\nfile\\nro\"];")) << *dot;
  EXPECT_TRUE(contains(*dot, "n3 [shape=ellipse, label=\"(anonymous)\\nblock-backend\"];")) << *dot;
  EXPECT_EQ(dot->rfind("digraph strata {\n", 0), 0u);
  EXPECT_EQ(dot->substr(dot->size() - 2), "}\n");
}

TEST(QmpGraph, EdgesShowNameAndPermissions) {
  auto dot = graph_to_dot(kGraph, kNamed);
  ASSERT_TRUE(dot);
  EXPECT_TRUE(contains(*dot,
                       "n2 -> n1 [label=\"file\\nperm: resize, write, consistent-read\\n"
                       "shared: write-unchanged, consistent-read\"];"))
      << *dot;
  EXPECT_TRUE(contains(*dot, "n3 -> n2 [label=\"root\\nperm: none\\nshared: write\"];")) << *dot;
}

TEST(QmpGraph, AnEdgeRoleIsShownWhenTheServerGivesOne) {
  json graph = kGraph;
  graph["edges"][0]["role"] = json::array({"data", "metadata"});
  graph["edges"][1]["role"] = "primary";
  auto dot = graph_to_dot(graph, kNamed);
  ASSERT_TRUE(dot);
  EXPECT_TRUE(contains(*dot, "label=\"file\\nrole: data, metadata\\nperm: ")) << *dot;
  EXPECT_TRUE(contains(*dot, "label=\"root\\nrole: primary\\nperm: ")) << *dot;
}

TEST(QmpGraph, ADriverNodeMissingFromTheFlatListIsMarkedUnknown) {
  auto dot = graph_to_dot(kGraph, json::array());
  ASSERT_TRUE(dot);
  EXPECT_TRUE(contains(*dot, "label=\"f0\\n?\"")) << *dot;
}

TEST(QmpGraph, AReplyWithoutNodesOrEdgesIsAProtocolError) {
  auto dot = graph_to_dot(json::object({{"nodes", json::array()}}), kNamed);
  ASSERT_FALSE(dot);
  EXPECT_EQ(dot.error().err(), EPROTO);
}

}  // namespace
}  // namespace strata::qmp_client
