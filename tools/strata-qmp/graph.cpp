#include "graph.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <vector>

namespace strata::qmp_client {

using nlohmann::json;

namespace {

// A DOT double-quoted string: backslash and quote escaped; "\n" in `text` stays a line break.
std::string dot_quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out + "\"";
}

std::string string_or(const json& object, const char* key, std::string fallback) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : fallback;
}

std::string joined(const json& list) {
  std::string out;
  if (!list.is_array()) return out;
  for (const auto& item : list) {
    if (!item.is_string()) continue;
    if (!out.empty()) out += ", ";
    out += item.get<std::string>();
  }
  return out.empty() ? "none" : out;
}

std::string node_label(const json& node, const std::map<std::string, const json*>& named) {
  std::string name = string_or(node, "name", "");
  std::string type = string_or(node, "type", "");
  if (type != "block-driver") {
    // Block backends are often anonymous; jobs are named by their id.
    return (name.empty() ? "(anonymous)" : name) + "\n" + type;
  }
  auto info = named.find(name);
  if (info == named.end()) return name + "\n?";
  const json& n = *info->second;
  auto ro = n.find("ro");
  std::string mode = ro == n.end() || !ro->is_boolean() ? "?" : (ro->get<bool>() ? "ro" : "rw");
  return name + "\n" + string_or(n, "drv", "?") + "\n" + mode;
}

const char* node_shape(const json& node) {
  std::string type = string_or(node, "type", "");
  if (type == "block-backend") return "ellipse";
  if (type == "block-job") return "hexagon";
  return "box";
}

}  // namespace

Result<std::string> graph_to_dot(const json& graph, const json& named_nodes) {
  auto nodes = graph.find("nodes");
  auto edges = graph.find("edges");
  if (nodes == graph.end() || !nodes->is_array() || edges == graph.end() || !edges->is_array()) {
    return fail(EPROTO, "x-debug-query-block-graph returned no nodes and edges");
  }
  std::map<std::string, const json*> named;
  if (named_nodes.is_array()) {
    for (const auto& n : named_nodes) named[string_or(n, "node-name", "")] = &n;
  }
  std::string dot = "digraph strata {\n  node [fontname=\"monospace\"];\n";
  dot += "  edge [fontname=\"monospace\", fontsize=10];\n";
  for (const auto& node : *nodes) {
    auto id = node.find("id");
    if (id == node.end() || !id->is_number_integer()) continue;
    dot += fmt::format("  n{} [shape={}, label={}];\n", id->get<int64_t>(), node_shape(node),
                       dot_quoted(node_label(node, named)));
  }
  for (const auto& edge : *edges) {
    auto parent = edge.find("parent");
    auto child = edge.find("child");
    if (parent == edge.end() || child == edge.end() || !parent->is_number_integer() ||
        !child->is_number_integer()) {
      continue;
    }
    std::string label = string_or(edge, "name", "?");
    // QEMU 7.2 reports no role; strata-daemon may add one (a name or a list of names).
    if (auto role = edge.find("role"); role != edge.end()) {
      label += "\nrole: " + (role->is_string() ? role->get<std::string>() : joined(*role));
    }
    label += "\nperm: " + joined(edge.value("perm", json::array())) +
             "\nshared: " + joined(edge.value("shared-perm", json::array()));
    dot += fmt::format("  n{} -> n{} [label={}];\n", parent->get<int64_t>(), child->get<int64_t>(),
                       dot_quoted(label));
  }
  return dot + "}\n";
}

Result<void> render_svg(const std::string& dot_text, const std::string& output) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return errno_error(errno, "pipe");
  int out_fd = -1;
  if (!output.empty()) {
    out_fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out_fd < 0) {
      int err = errno;
      ::close(pipe_fds[0]);
      ::close(pipe_fds[1]);
      return errno_error(err, fmt::format("Could not open '{}'", output));
    }
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipe_fds[0], STDIN_FILENO);
    if (out_fd >= 0) ::dup2(out_fd, STDOUT_FILENO);
    ::execlp("dot", "dot", "-Tsvg", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int fork_errno = errno;
  ::close(pipe_fds[0]);
  if (out_fd >= 0) ::close(out_fd);
  if (pid < 0) {
    ::close(pipe_fds[1]);
    return errno_error(fork_errno, "fork");
  }
  size_t done = 0;
  while (done < dot_text.size()) {
    ssize_t n = ::write(pipe_fds[1], dot_text.data() + done, dot_text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;  // dot died early; its exit status says why
    done += static_cast<size_t>(n);
  }
  ::close(pipe_fds[1]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    return fail(ENOENT, "could not run 'dot' (is Graphviz installed?)");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return fail(EIO, "'dot -Tsvg' failed");
  }
  return {};
}

}  // namespace strata::qmp_client
