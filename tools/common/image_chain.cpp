#include "image_chain.h"

#include <sys/stat.h>

#include <utility>

#include "strata/child.h"
#include "strata/node.h"

namespace strata::tools {
namespace {

// A "protocol:" prefix as QEMU's path_has_protocol sees it: a colon before any slash.
bool has_protocol(std::string_view name) {
  const size_t colon = name.find(':');
  return colon != std::string_view::npos &&
         name.substr(0, colon).find('/') == std::string_view::npos;
}

Node* backing_node(const Node& node) {
  for (const Child* c : node.children()) {
    if (has_role(c->role(), ChildRole::kCow)) return &c->node();
  }
  return nullptr;
}

}  // namespace

std::string full_backing_filename(std::string_view image, std::string_view backing) {
  if (backing.empty()) return {};
  if (backing.front() == '/' || has_protocol(backing)) return std::string(backing);
  const size_t slash = image.rfind('/');
  std::string dir = slash == std::string_view::npos ? "" : std::string(image.substr(0, slash + 1));
  return dir + std::string(backing);
}

std::vector<ChainLayer> image_chain(Node& top, std::string top_name) {
  std::vector<ChainLayer> chain;
  std::string name = std::move(top_name);
  // A chain cannot hold a loop (each node was opened below its parent), but stay bounded.
  for (Node* node = &top; node != nullptr && chain.size() < 4096; node = backing_node(*node)) {
    ChainLayer layer;
    layer.node = node;
    layer.filename = name;
    layer.facts = node->driver().image_facts();
    layer.full_backing_filename = full_backing_filename(name, layer.facts.backing_file);
    name = layer.full_backing_filename;
    chain.push_back(std::move(layer));
  }
  return chain;
}

std::string storage_name(const std::vector<ChainLayer>& chain, const Node& node) {
  for (const ChainLayer& layer : chain) {
    if (layer.node == &node) return layer.filename;
    const Child* file = layer.node->child("file");
    if (file != nullptr && &file->node() == &node) return layer.filename;
    const Child* data = layer.node->child("data-file");
    if (data != nullptr && &data->node() == &node) {
      // QEMU 7.2 opens the data file by its recorded name as it is (relative to the working
      // directory) and names it so.
      if (!layer.facts.data_file.empty()) return layer.facts.data_file;
    }
  }
  return node.filename();
}

std::optional<uint64_t> allocated_file_size(const Node& node) {
  const Node* storage = &node;
  for (const Child* file = storage->child("file"); file != nullptr; file = storage->child("file")) {
    storage = &file->node();
  }
  const std::string path = storage->filename();
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return std::nullopt;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace strata::tools
