// ImageSession: the one image a strata-img subcommand works on, opened the way qemu-img's
// img_open opens it, in an event loop and engine of its own.
//
// Every subcommand that works on an existing image starts alike: refuse bad image flags before
// anything opens (check_image_spec's errors, then --image-opts with --format), open the image
// with the permissions the subcommand needs, and on failure print
// "<prog>: Could not open '<filename>': <error>" and the error's hint, exit status 1. The session
// owns the loop and the engine, so the image closes before them on every path out.
//
// Threading: the main thread, which also runs the loop.
#pragma once

#include <string_view>

#include "image.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/perm.h"

namespace strata::tools::img {

// The image-flag checks qemu-img makes before opening: the errors of check_image_spec
// ("-U conflicts with image options", malformed --image-opts text), then "--image-opts and
// --format are mutually exclusive". Reports the first problem and returns false.
bool image_flags_valid(std::string_view prog, const ImageSpec& spec);

class ImageSession {
 public:
  ImageSession();
  ~ImageSession();
  ImageSession(const ImageSession&) = delete;
  ImageSession& operator=(const ImageSession&) = delete;

  // Checks the flags of `spec` (image_flags_valid) and opens it for a user holding `perm` and
  // sharing `shared`. False once the problem is reported; the caller exits with status 1.
  [[nodiscard]] bool open(std::string_view prog, const ImageSpec& spec, Perm perm, Perm shared);

  // Closes the image now, for a subcommand that reports after closing (info, commit); the
  // destructor closes it otherwise. Safe when nothing is open.
  void close();

  EventLoop& loop() { return loop_; }
  Engine& engine() { return engine_; }
  // REQUIRES: open() succeeded and close() has not run.
  OpenImage& image() { return image_; }
  Node& node() { return *image_.node; }

 private:
  EventLoop loop_;
  Engine engine_;
  OpenImage image_;
};

}  // namespace strata::tools::img
