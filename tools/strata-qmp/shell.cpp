#include "shell.h"

#include <poll.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "keyval.h"
#include "output.h"

namespace strata::qmp_client {

using nlohmann::json;

namespace {

constexpr const char* kPrompt = "(strata-qmp) ";
constexpr int kHistoryLength = 1000;

constexpr const char* kHelp =
    "Syntax:\n"
    "  COMMAND [key=value ...]     e.g. blockdev-add driver=file node-name=f0 filename=x.img\n"
    "  COMMAND {json-arguments}    e.g. block_resize {\"node-name\": \"f0\", \"size\": 1048576}\n"
    "  {\"execute\": ...}            a raw QMP request\n"
    "Dotted keys nest (file.driver=file); 0, 1, ... make lists (children.0=a).\n"
    "A value that is a JSON number, true, false or null is that; anything else is a string\n"
    "(write '\"512\"' for the string 512). Ctrl-D leaves; `quit` stops the server.\n";

class Shell {
 public:
  Shell(QmpConnection conn, bool tty) : conn_(std::move(conn)), tty_(tty) {}

  int run();
  // Readline's line handler; a null line is end of input.
  void on_line(char* line);

 private:
  void handle_line(const std::string& line);
  void show_help();
  void print_event(const json& event);
  bool drain_socket();      // false once the connection is gone
  void read_plain_input();  // stdin is not a terminal

  QmpConnection conn_;
  bool tty_;
  bool done_ = false;
  bool lost_ = false;
  bool quit_sent_ = false;
  bool in_command_ = false;
  std::string pending_;  // plain input not yet ending in a newline
  std::string history_path_;
};

// Readline's callback interface takes a plain function; the one shell of the process is here.
Shell* g_shell = nullptr;

void readline_line_handler(char* line) { g_shell->on_line(line); }

void Shell::print_event(const json& event) {
  if (!tty_ || in_command_) {
    std::printf("%s\n", format_event(event).c_str());
    std::fflush(stdout);
    return;
  }
  // Put the event above the prompt and redraw what the user was typing beneath it.
  int saved_point = rl_point;
  char* saved_line = rl_copy_text(0, rl_end);
  rl_save_prompt();
  rl_replace_line("", 0);
  rl_redisplay();
  std::printf("%s\n", format_event(event).c_str());
  rl_restore_prompt();
  rl_replace_line(saved_line, 0);
  rl_point = saved_point;
  rl_redisplay();
  std::free(saved_line);
}

void Shell::show_help() {
  std::fputs(kHelp, stdout);
  in_command_ = true;
  auto reply = conn_.execute(json{{"execute", "query-commands"}},
                             [this](const json& event) { print_event(event); });
  in_command_ = false;
  if (!reply || !(*reply)["return"].is_array()) return;
  std::string names;
  for (const auto& cmd : (*reply)["return"]) {
    if (cmd.contains("name") && cmd["name"].is_string()) {
      names += (names.empty() ? "" : " ") + cmd["name"].get<std::string>();
    }
  }
  std::printf("Server commands: %s\n", names.c_str());
}

void Shell::handle_line(const std::string& line) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) return;
  if (tty_) add_history(line.c_str());
  if (line == "help" || line == "?") {
    show_help();
    return;
  }
  auto request = parse_request_line(line);
  if (!request) {
    std::printf("error: %s\n", request.error().message().c_str());
    std::fflush(stdout);
    return;
  }
  in_command_ = true;
  auto reply = conn_.execute(*request, [this](const json& event) { print_event(event); });
  in_command_ = false;
  if (!reply) {
    std::fprintf(stderr, "strata-qmp: %s\n", reply.error().message().c_str());
    lost_ = true;
    done_ = true;
    return;
  }
  // The server closes the connection after a successful quit; the shell ends with it.
  quit_sent_ = (*request)["execute"] == "quit" && !reply->contains("error");
  done_ = done_ || quit_sent_;
  if (reply->contains("error")) {
    std::printf("error: %s\n", format_error(*reply).c_str());
  } else {
    std::printf("%s\n", format_return(*reply).c_str());
  }
  std::fflush(stdout);
}

void Shell::on_line(char* line) {
  if (line == nullptr) {
    done_ = true;
    return;
  }
  std::string text(line);
  std::free(line);
  handle_line(text);
}

bool Shell::drain_socket() {
  while (true) {
    auto message = conn_.read_message(0);
    if (!message) {
      if (!quit_sent_) std::fprintf(stderr, "strata-qmp: %s\n", message.error().message().c_str());
      return false;
    }
    if (!*message) return true;
    // Only events come unasked; anything else is shown too rather than silently dropped.
    print_event(**message);
  }
}

void Shell::read_plain_input() {
  char chunk[4096];
  ssize_t n = ::read(STDIN_FILENO, chunk, sizeof(chunk));
  if (n < 0 && errno == EINTR) return;
  if (n <= 0) {
    if (!pending_.empty()) handle_line(std::exchange(pending_, {}));
    done_ = true;
    return;
  }
  pending_.append(chunk, static_cast<size_t>(n));
  size_t nl;
  while (!done_ && (nl = pending_.find('\n')) != std::string::npos) {
    std::string line = pending_.substr(0, nl);
    pending_.erase(0, nl + 1);
    handle_line(line);
  }
}

int Shell::run() {
  if (tty_) {
    const char* home = std::getenv("HOME");
    if (home != nullptr) history_path_ = std::string(home) + "/.strata_qmp_history";
    stifle_history(kHistoryLength);
    if (!history_path_.empty()) read_history(history_path_.c_str());
    g_shell = this;
    rl_callback_handler_install(kPrompt, readline_line_handler);
  }
  while (!done_) {
    // Events that came in the same read as a reply sit in the connection's buffer, where poll
    // cannot see them: show them before waiting.
    if (!drain_socket()) {
      lost_ = !quit_sent_;
      break;
    }
    pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {conn_.fd(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0 && !drain_socket()) {
      lost_ = !quit_sent_;
      break;
    }
    if (fds[0].revents != 0) {
      if (tty_) {
        rl_callback_read_char();
      } else {
        read_plain_input();
      }
    }
  }
  if (tty_) {
    rl_callback_handler_remove();
    std::printf("\n");
    if (!history_path_.empty()) write_history(history_path_.c_str());
    g_shell = nullptr;
  }
  return lost_ ? 1 : 0;
}

}  // namespace

int run_shell(QmpConnection conn) {
  Shell shell(std::move(conn), ::isatty(STDIN_FILENO) != 0);
  return shell.run();
}

}  // namespace strata::qmp_client
