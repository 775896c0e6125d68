#include "stacks.h"

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
  };
  return stacks;
}

}  // namespace strata::testing
