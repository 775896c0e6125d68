// Opening an image from command-line flags: the one place the front ends turn "-f raw -r -t none
// -i io_uring disk.img" (or --image-opts keyval text) into node options, open the node in an
// Engine and attach a BlockBackend to it.
//
// Strata never probes the format: without -f an image opens as raw. The options are built in
// keyval form (every scalar a string, booleans "on"/"off") so that flags and --image-opts text
// go down one path: flags fill in only what the text did not say, as QEMU's open flags do.
//
// Threading: event loop thread only (open_image and close_image run the loop).
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "cli.h"
#include "strata/perm.h"
#include "strata/result.h"

namespace strata {
class BlockBackend;
class Engine;
class EventLoop;
class Node;
}  // namespace strata

namespace strata::tools {

struct ImageSpec {
  // The image file name, or keyval text ("driver=raw,file.filename=x") with image_opts.
  std::string filename;
  bool image_opts = false;
  std::string format;  // the format driver (-f); empty means raw
  bool read_only = false;
  bool force_share = false;  // -U
  CacheMode cache;
  std::string aio;      // -i; empty leaves the file driver's default
  std::string discard;  // -d; empty leaves the node's default
  // More keyval options (qemu-io's "open -o"), merged under the flags' values.
  nlohmann::json extra = nlohmann::json::object();
};

// The node options for `spec`, in keyval syntax. Text the user wrote (--image-opts, "open -o")
// wins; the flags fill in what it leaves out, as QEMU's open flags do. The format defaults to
// raw. `is_protocol` says whether a driver is a protocol driver ("-f file"), whose filename goes
// on the node itself rather than on a `file` child. An inline `file` child given without a
// driver gets the file driver, as QEMU's tools resolve a plain file name (this picks a protocol;
// it does not probe a format).
// Fails for "-U conflicts with image options" and malformed --image-opts text, which the tools
// report as they are (check_image_spec), before trying to open anything.
Result<nlohmann::json> image_options(const ImageSpec& spec,
                                     const std::function<bool(std::string_view)>& is_protocol);

// The problems image_options can find, for tools to report before opening.
Result<void> check_image_spec(const ImageSpec& spec);

// An open image: the node the user named and the tool's handle on it.
struct OpenImage {
  Node* node = nullptr;
  std::string node_name;
  std::unique_ptr<BlockBackend> blk;
  bool writethrough = false;  // every write carries FUA (cache mode writethrough/directsync)

  OpenImage();
  OpenImage(OpenImage&&) noexcept;
  OpenImage& operator=(OpenImage&&) noexcept;
  ~OpenImage();
};

// Opens `spec` in `engine` and attaches an unnamed user holding `perm` and sharing `shared`.
// The error is the engine's, unprefixed (callers add "can't open device X: " and the like), or
// "Unknown driver 'x'" for a format no driver has (QEMU's tools open through bdrv_open, which
// says this, rather than blockdev-add's enum error).
// On failure nothing stays open.
Result<OpenImage> open_image(EventLoop& loop, Engine& engine, const ImageSpec& spec, Perm perm,
                             Perm shared);

// Detaches the user and closes the node (and its children). Safe on an empty OpenImage.
void close_image(EventLoop& loop, Engine& engine, OpenImage& image);

}  // namespace strata::tools
