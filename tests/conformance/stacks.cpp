#include "stacks.h"

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace strata::testing {
namespace {

using nlohmann::json;

// Every stack's top node: named, and passing discards down (the default, discard=ignore, would
// drop them at the top).
json top(json options) {
  options["node-name"] = "conf";
  options["discard"] = "unmap";
  return options;
}

json file_node(const std::string& image, const char* aio) {
  return json{{"driver", "file"}, {"filename", image}, {"aio", aio}};
}

// The raw window: a 1 MiB view at an offset that is sector- but not page-aligned, inside a
// file 8 KiB larger, so that both edges of the window sit inside the file.
constexpr uint64_t kWindowOffset = 4608;

// qcow2 images are made by qemu-img (the reference), over the fixture's image file.
void qemu_img_create(const std::string& command) {
  if (std::system(command.c_str()) != 0) throw std::runtime_error("failed: " + command);
}

json qcow2_over(const std::string& image) {
  return json{{"driver", "qcow2"}, {"file", file_node(image, "threads")}};
}

json memory_node() { return json{{"driver", "memory"}, {"size", kImageSize}}; }

}  // namespace

const std::vector<StackSpec>& all_stacks() {
  static const std::vector<StackSpec> stacks = {
      {.name = "file_io_uring",
       .image_dir = ImageDir::kTmp,
       .options = [](const std::string& image) { return top(file_node(image, "io_uring")); },
       .needs_io_uring = true},
      {.name = "file_threads",
       .image_dir = ImageDir::kTmp,
       .options = [](const std::string& image) { return top(file_node(image, "threads")); }},
      {.name = "file_direct",
       // The core discards only whole request-aligned blocks; partial blocks keep their data.
       .caps = {.discard = DiscardEffect::kZeroesOrUnchanged},
       .image_dir = ImageDir::kVarTmp,
       .options =
           [](const std::string& image) {
             json o = file_node(image, "threads");
             o["cache"] = {{"direct", true}};
             return top(o);
           }},
      {.name = "memory", .options = [](const std::string&) { return top(memory_node()); }},
      {.name = "null_co",
       .caps = {.keeps_data = false,
                .truncate_refusal = "Image format driver does not support resize"},
       .options =
           [](const std::string&) {
             return top(json{{"driver", "null-co"}, {"size", kImageSize}, {"read-zeroes", true}});
           }},
      {.name = "raw_file_io_uring",
       .image_dir = ImageDir::kTmp,
       .options =
           [](const std::string& image) {
             return top(json{{"driver", "raw"}, {"file", file_node(image, "io_uring")}});
           },
       .needs_io_uring = true},
      {.name = "raw_file_threads",
       .image_dir = ImageDir::kTmp,
       .options =
           [](const std::string& image) {
             return top(json{{"driver", "raw"}, {"file", file_node(image, "threads")}});
           }},
      {.name = "raw_window_file",
       .caps = {.truncate_refusal = "Cannot resize fixed-size raw disks"},
       .image_dir = ImageDir::kTmp,
       .file_slack = 8192,
       .options =
           [](const std::string& image) {
             return top(json{{"driver", "raw"},
                             {"offset", kWindowOffset},
                             {"size", kImageSize},
                             {"file", file_node(image, "threads")}});
           }},
      {.name = "raw_memory",
       .options =
           [](const std::string&) {
             return top(json{{"driver", "raw"}, {"file", memory_node()}});
           }},
      {.name = "qcow2_file",
       .caps = {.discard = DiscardEffect::kZeroesOrUnchanged},
       .image_dir = ImageDir::kTmp,
       .options = [](const std::string& image) { return top(qcow2_over(image)); },
       .prepare =
           [](const std::string& image) {
             qemu_img_create("qemu-img create -q -f qcow2 -o cluster_size=4k " + image + " 1M");
           }},
      {.name = "qcow2_extended_l2_backing",
       .caps = {.discard = DiscardEffect::kZeroesOrUnchanged},
       .image_dir = ImageDir::kTmp,
       .options = [](const std::string& image) { return top(qcow2_over(image)); },
       .prepare =
           [](const std::string& image) {
             qemu_img_create("qemu-img create -q -f raw " + image + ".base 1M");
             qemu_img_create("qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=32k -b " +
                             image + ".base -F raw " + image + " 1M");
           }},
      {.name = "qcow2_data_file",
       .caps = {.discard = DiscardEffect::kZeroesOrUnchanged},
       .image_dir = ImageDir::kTmp,
       .options = [](const std::string& image) { return top(qcow2_over(image)); },
       .prepare =
           [](const std::string& image) {
             qemu_img_create("qemu-img create -q -f qcow2 -o data_file=" + image +
                             ".data,cluster_size=16k " + image + " 1M");
           }},
  };
  return stacks;
}

}  // namespace strata::testing
