// strata-qmp: a QMP client for strata-daemon and qemu-storage-daemon.
//
//   strata-qmp [-q] SOCKET                          interactive shell (shell.h)
//   strata-qmp [-q] SOCKET COMMAND [key=value...]   one command, result as JSON on stdout
//   strata-qmp [-q] SOCKET COMMAND '{json}'         the same with raw JSON arguments
//   strata-qmp SOCKET graph [--format dot|svg] [-o FILE]
//
// Exit status: 0 success, 1 the command failed or the server could not be reached (the error
// class and desc go to stderr as "strata-qmp: <class>: <desc>"), 2 bad usage. Events that
// arrive before a one-shot command's reply go to stderr, one JSON line each; -q drops them.
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "getopt.h"
#include "graph.h"
#include "keyval.h"
#include "output.h"
#include "qmp_connection.h"
#include "shell.h"

namespace strata::qmp_client {
namespace {

using nlohmann::json;

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

constexpr const char* kUsage =
    "Usage: strata-qmp [-q] SOCKET                         interactive shell\n"
    "       strata-qmp [-q] SOCKET COMMAND [key=value...]  run one command\n"
    "       strata-qmp [-q] SOCKET COMMAND '{json args}'\n"
    "       strata-qmp [-q] SOCKET graph [--format dot|svg] [-o FILE]\n"
    "\n"
    "Arguments: dotted keys nest (file.driver=file); a value that is a JSON number, true,\n"
    "false or null is that, anything else a string ('\"512\"' is the string 512).\n"
    "Options: -q  drop events instead of printing them on stderr\n"
    "         -h, --help  this text;  -V, --version\n";

int report(const std::string& message) {
  std::fprintf(stderr, "strata-qmp: %s\n", message.c_str());
  return kExitFailure;
}

EventSink stderr_events(bool quiet) {
  if (quiet) return {};
  return [](const json& event) { std::fprintf(stderr, "%s\n", format_event(event).c_str()); };
}

// Runs one request; prints and returns the "return" value, or reports the error.
Result<json> run_request(QmpConnection& conn, json request, const EventSink& on_event) {
  auto reply = conn.execute(std::move(request), on_event);
  if (!reply) return reply.error();
  if (reply->contains("error")) return fail(EINVAL, "{}", format_error(*reply));
  return (*reply)["return"];
}

int run_one_shot(QmpConnection conn, const std::string& command,
                 const std::vector<std::string>& words, bool quiet) {
  auto args = parse_arguments(words);
  if (!args) return report(args.error().message());
  json request = {{"execute", command}};
  if (!args->empty()) request["arguments"] = std::move(*args);
  auto reply = conn.execute(std::move(request), stderr_events(quiet));
  if (!reply) return report(reply.error().message());
  if (reply->contains("error")) return report(format_error(*reply));
  std::printf("%s\n", format_return(*reply).c_str());
  return 0;
}

int run_graph(QmpConnection conn, const std::vector<std::string>& words, bool quiet) {
  std::vector<std::string> args = {"graph"};
  args.insert(args.end(), words.begin(), words.end());
  static constexpr tools::LongOption kLong[] = {{"format", true, 'f'}, {"output", true, 'o'}};
  tools::OptionParser parser(args, "f:o:", kLong);
  std::string format = "dot";
  std::string output;
  for (auto step = parser.next(); step.status != tools::OptionParser::Status::kEnd;
       step = parser.next()) {
    if (step.status == tools::OptionParser::Status::kError) {
      std::fprintf(stderr, "%s\n", tools::getopt_message("strata-qmp", *step.error).c_str());
      return kExitUsage;
    }
    (step.option.id == 'f' ? format : output) = step.option.arg;
  }
  if (format != "dot" && format != "svg") {
    std::fprintf(stderr, "strata-qmp: graph: unknown format '%s' (dot or svg)\n", format.c_str());
    return kExitUsage;
  }
  if (!parser.operands().empty()) {
    std::fprintf(stderr, "strata-qmp: graph: unexpected argument '%s'\n",
                 parser.operands()[0].c_str());
    return kExitUsage;
  }
  auto graph =
      run_request(conn, json{{"execute", "x-debug-query-block-graph"}}, stderr_events(quiet));
  if (!graph) return report(graph.error().message());
  json named_request = {{"execute", "query-named-block-nodes"}, {"arguments", {{"flat", true}}}};
  auto named = run_request(conn, std::move(named_request), stderr_events(quiet));
  if (!named) return report(named.error().message());
  auto dot = graph_to_dot(*graph, *named);
  if (!dot) return report(dot.error().message());
  if (format == "svg") {
    auto rendered = render_svg(*dot, output);
    return rendered ? 0 : report(rendered.error().message());
  }
  std::FILE* out = output.empty() ? stdout : std::fopen(output.c_str(), "w");
  if (out == nullptr)
    return report(errno_error(errno, "Could not open '" + output + "'").message());
  bool ok = std::fputs(dot->c_str(), out) >= 0;
  ok = (out == stdout ? std::fflush(out) : std::fclose(out)) == 0 && ok;
  return ok ? 0 : report("writing the graph failed");
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  static constexpr tools::LongOption kLong[] = {{"help", false, 'h'}, {"version", false, 'V'}};
  // '+': options stop at the socket, so a command's own words are never taken for ours.
  tools::OptionParser parser(args, "+hqV", kLong);
  bool quiet = false;
  for (auto step = parser.next(); step.status != tools::OptionParser::Status::kEnd;
       step = parser.next()) {
    if (step.status == tools::OptionParser::Status::kError) {
      std::fprintf(stderr, "%s\n%s", tools::getopt_message("strata-qmp", *step.error).c_str(),
                   kUsage);
      return kExitUsage;
    }
    switch (step.option.id) {
      case 'h':
        std::fputs(kUsage, stdout);
        return 0;
      case 'V':
        std::printf("strata-qmp version %s\n", STRATA_VERSION);
        return 0;
      case 'q':
        quiet = true;
        break;
    }
  }
  const auto& operands = parser.operands();
  if (operands.empty()) {
    std::fputs(kUsage, stderr);
    return kExitUsage;
  }
  // A failed write to dot's pipe or a vanished server must be an error value, not a signal.
  std::signal(SIGPIPE, SIG_IGN);
  auto conn = QmpConnection::open(operands[0], stderr_events(quiet));
  if (!conn) return report(conn.error().message());
  if (operands.size() == 1) return run_shell(std::move(*conn));
  std::vector<std::string> words(operands.begin() + 2, operands.end());
  if (operands[1] == "graph") return run_graph(std::move(*conn), words, quiet);
  return run_one_shot(std::move(*conn), operands[1], words, quiet);
}

}  // namespace
}  // namespace strata::qmp_client

int main(int argc, char** argv) { return strata::qmp_client::run(argc, argv); }
