// An open image seen as qemu-img's info and map see it: a chain of layers (the image, its
// backing file, that file's backing file, ...), each named the way QEMU names it.
//
// QEMU names a backing file by joining the directory of the image that refers to it with the
// name recorded in the image ("top.qcow2" refers to "mid.qcow2": "mid.qcow2"; "dir/top.qcow2":
// "dir/mid.qcow2"), while Strata's qcow2 driver opens it by absolute path. The tools print
// QEMU's names, so they come from here rather than from Node::filename.
//
// Threading: event loop thread (reads nodes); the functions do no I/O except stat().
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/driver.h"

namespace strata {
class Node;
}  // namespace strata

namespace strata::tools {

struct ChainLayer {
  Node* node = nullptr;
  std::string filename;  // as QEMU names this layer (bs->filename)
  ImageFacts facts;      // from the driver
  // The backing file's name made absolute the way QEMU does (full-backing-filename); empty
  // when there is no backing file.
  std::string full_backing_filename;
};

// QEMU's bdrv_make_absolute_filename: `backing` unchanged if it is absolute or has a protocol
// prefix ("nbd:..."), else the directory part of `image` (up to its last '/') joined to it.
// Empty if `backing` is empty.
std::string full_backing_filename(std::string_view image, std::string_view backing);

// The layers from `top` down through its backing children (only those opened: a node opened
// with backing=null is a chain of one). `top_name` is the name the user gave.
std::vector<ChainLayer> image_chain(Node& top, std::string top_name);

// The name a map line shows for `node`, which holds a layer's data: the layer's name for its
// own node or its `file` child, the data file's recorded name (QEMU 7.2 shows it as is) for its
// `data-file` child, else Node::filename.
std::string storage_name(const std::vector<ChainLayer>& chain, const Node& node);

// Bytes allocated on the host for `node`'s storage (st_blocks * 512 of the file under its
// `file` children), as QEMU's "disk size"/"actual-size"; nullopt if it cannot tell.
std::optional<uint64_t> allocated_file_size(const Node& node);

}  // namespace strata::tools
