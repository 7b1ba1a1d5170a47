#include "tests/support/fake_imap_server.h"

#include <csignal>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace imapstage::testing {
namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool iequals(std::string_view a, std::string_view b) { return upper(a) == upper(b); }

// IMAP quoted string.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string join(const std::vector<std::string>& v, std::string_view sep = " ") {
  std::string out;
  for (auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

// Gmail's X-GM-LABELS list: system labels as atoms, the others quoted.
std::string label_list(const std::vector<std::string>& labels) {
  std::vector<std::string> out;
  for (auto& l : labels) out.push_back(!l.empty() && l[0] == '\\' ? l : quote(l));
  return join(out);
}

// The label a message appended to `folder` gets on Gmail ("" for All Mail, Spam, Trash).
std::string gmail_label_of(const std::string& folder) {
  if (folder == "INBOX") return "\\Inbox";
  if (folder == "[Gmail]/Sent Mail") return "\\Sent";
  if (folder == "[Gmail]/Starred") return "\\Starred";
  if (folder == "[Gmail]/Important") return "\\Important";
  if (folder == "[Gmail]/Drafts") return "\\Draft";
  if (folder.rfind("[Gmail]", 0) == 0) return "";
  return folder;
}

// Tokens of a command line: atoms, quoted strings, parenthesized lists (their
// inside text), literals (their index), in order.
struct Token {
  enum Kind { atom, string, list, literal } kind = atom;
  std::string text;   // atom or unquoted string or list inside
  size_t index = 0;   // of a literal
};

std::vector<Token> tokenize(std::string_view s) {
  std::vector<Token> out;
  size_t i = 0, literal_index = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == ' ') {
      ++i;
    } else if (c == '"') {
      Token t{Token::string, "", 0};
      ++i;
      while (i < s.size() && s[i] != '"') {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        t.text += s[i++];
      }
      ++i;
      out.push_back(std::move(t));
    } else if (c == '(') {
      int depth = 0;
      size_t start = i;
      for (; i < s.size(); ++i) {
        if (s[i] == '(') ++depth;
        if (s[i] == ')' && --depth == 0) break;
      }
      out.push_back({Token::list, std::string(s.substr(start + 1, i - start - 1)), 0});
      ++i;
    } else if (c == '{') {
      size_t close = s.find('}', i);
      if (close == std::string_view::npos) close = s.size();
      out.push_back({Token::literal, std::string(s.substr(i, close - i + 1)), literal_index++});
      i = close + 1;
    } else {
      size_t start = i;
      int brackets = 0;
      while (i < s.size() && (brackets > 0 || (s[i] != ' ' && s[i] != '('))) {
        if (s[i] == '[') ++brackets;
        if (s[i] == ']') --brackets;
        ++i;
      }
      out.push_back({Token::atom, std::string(s.substr(start, i - start)), 0});
    }
  }
  return out;
}

// A mailbox or string argument: atom, quoted or literal.
std::string string_value(const Token& t, const std::vector<std::string>& literals) {
  if (t.kind == Token::literal) return t.index < literals.size() ? literals[t.index] : "";
  return t.text;
}

// Parses an IMAP sequence set of UIDs; `max` stands for '*'.
std::set<uint32_t> parse_set(std::string_view s, uint32_t max, const std::vector<uint32_t>& present) {
  std::set<uint32_t> out;
  auto number = [&](std::string_view n) -> uint32_t {
    if (n == "*") return max;
    return static_cast<uint32_t>(std::stoul(std::string(n)));
  };
  size_t i = 0;
  while (i <= s.size()) {
    size_t comma = s.find(',', i);
    std::string_view part = s.substr(i, comma == std::string_view::npos ? std::string_view::npos : comma - i);
    size_t colon = part.find(':');
    uint32_t a = number(part.substr(0, colon));
    uint32_t b = colon == std::string_view::npos ? a : number(part.substr(colon + 1));
    if (a > b) std::swap(a, b);
    for (uint32_t u : present)
      if (u >= a && u <= b) out.insert(u);
    if (comma == std::string_view::npos) break;
    i = comma + 1;
  }
  return out;
}

bool send_all(int fd, std::string_view bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t w = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

struct FakeExchange::Connection {
  int fd = -1;
  size_t number = 0;
  std::string buffer;        // received, not yet consumed
  std::string selected;      // raw folder name
  bool read_only = false;
  bool closed = false;

  // Waits for more bytes; false at EOF, error or after 30 s of silence.
  bool fill() {
    pollfd p{fd, POLLIN, 0};
    int r;
    do r = poll(&p, 1, 30000);
    while (r < 0 && errno == EINTR);
    if (r <= 0) return false;
    char buf[16384];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    buffer.append(buf, static_cast<size_t>(n));
    return true;
  }
  std::optional<std::string> line() {
    for (;;) {
      size_t eol = buffer.find("\r\n");
      if (eol != std::string::npos) {
        std::string l = buffer.substr(0, eol);
        buffer.erase(0, eol + 2);
        return l;
      }
      if (!fill()) return std::nullopt;
    }
  }
  std::optional<std::string> bytes(size_t n) {
    while (buffer.size() < n)
      if (!fill()) return std::nullopt;
    std::string b = buffer.substr(0, n);
    buffer.erase(0, n);
    return b;
  }
  void send(std::string_view raw) {
    if (!closed && !send_all(fd, raw)) closed = true;
  }
};

struct FakeImapServer::Rule {
  std::regex pattern;
  Handler handler;
  int left = 0;  // uses left; <0: unlimited
};

struct FakeImapServer::Expectation {
  std::string text;
  std::regex pattern;
  std::string response;
};

struct FakeImapServer::Threads {
  std::thread acceptor;
  std::vector<std::thread> workers;
  std::vector<int> fds;  // open connection fds
  std::atomic<bool> stopping{false};
};

// --- FakeExchange ------------------------------------------------------------------

const std::string& FakeExchange::selected() const { return connection_.selected; }
void FakeExchange::send(std::string_view raw) { connection_.send(raw); }
void FakeExchange::untagged(std::string_view line) { connection_.send(fmt::format("* {}\r\n", line)); }
void FakeExchange::tagged(std::string_view text) { connection_.send(fmt::format("{} {}\r\n", tag(), text)); }
void FakeExchange::standard() { server_.standard(*this); }
void FakeExchange::standard_fetch(const std::function<bool(FakeExchange&, uint32_t)>& after) {
  server_.standard_fetch(*this, &after);
}
std::string FakeExchange::fetch_response(uint32_t uid) {
  std::lock_guard lock(server_.mutex_);
  const FakeFolder* f = server_.find(connection_.selected);
  if (!f) return "";
  for (size_t i = 0; i < f->messages.size(); ++i)
    if (f->messages[i].uid == uid) return server_.fetch_response(*this, *f, i);
  return "";
}

// --- FakeImapServer ------------------------------------------------------------------

FakeImapServer::FakeImapServer() : threads_(std::make_unique<Threads>()) {
  // Both ends write to sockets the other may have closed (drop tests):
  // those writes must fail with EPIPE, not kill the test process.
  std::signal(SIGPIPE, SIG_IGN);
  folders_.push_back(FakeFolder{"INBOX", {"\\HasNoChildren"}, true, 1, 1, {}});
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, host_.c_str(), &a.sin_addr);
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listen_fd_, 16) != 0)
    throw std::runtime_error(fmt::format("fake IMAP server: cannot listen: {}", std::strerror(errno)));
  socklen_t len = sizeof a;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  if (::pipe2(wake_, O_CLOEXEC) != 0) throw std::runtime_error("fake IMAP server: pipe failed");
  threads_->acceptor = std::thread([this] { accept_loop(); });
}

FakeImapServer::~FakeImapServer() {
  threads_->stopping = true;
  (void)!::write(wake_[1], "x", 1);
  if (threads_->acceptor.joinable()) threads_->acceptor.join();
  drop_connections();
  std::vector<std::thread> workers;
  {
    std::lock_guard lock(mutex_);
    workers.swap(threads_->workers);
  }
  for (auto& t : workers)
    if (t.joinable()) t.join();
  ::close(listen_fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void FakeImapServer::accept_loop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    int r = poll(p, 2, -1);
    if (r < 0 && errno == EINTR) continue;
    if (threads_->stopping || r < 0 || (p[1].revents & POLLIN)) return;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard lock(mutex_);
    size_t number = ++accepted_;
    threads_->fds.push_back(fd);
    threads_->workers.emplace_back([this, fd, number] { serve(fd, number); });
  }
}

void FakeImapServer::drop_connections() {
  std::lock_guard lock(mutex_);
  for (int fd : threads_->fds) ::shutdown(fd, SHUT_RDWR);
}

void FakeImapServer::serve(int fd, size_t number) {
  FakeExchange::Connection c;
  c.fd = fd;
  c.number = number;
  std::string greeting;
  {
    std::lock_guard lock(mutex_);
    greeting = greeting_;
  }
  c.send(greeting);
  while (!c.closed) {
    auto first = c.line();
    if (!first) break;
    FakeCommand cmd;
    cmd.connection = number;
    cmd.received = std::chrono::steady_clock::now();
    std::string line = *first;
    size_t sp = line.find(' ');
    cmd.tag = line.substr(0, sp);
    std::string text = sp == std::string::npos ? "" : line.substr(sp + 1);
    // Literals: "{N}" (answer "+" first) or "{N+}" at the end of a line.
    bool lost = false;
    for (;;) {
      cmd.text += text;
      if (text.empty() || text.back() != '}') break;
      size_t open = text.rfind('{');
      if (open == std::string::npos) break;
      std::string num = text.substr(open + 1, text.size() - open - 2);
      bool sync = true;
      if (!num.empty() && num.back() == '+') {
        sync = false;
        num.pop_back();
      }
      if (num.empty() || !std::all_of(num.begin(), num.end(), ::isdigit) || num.size() > 9) break;
      if (sync) c.send("+ go ahead\r\n");
      auto literal = c.bytes(std::stoul(num));
      auto rest = literal ? c.line() : std::nullopt;
      if (!rest) {
        lost = true;
        break;
      }
      cmd.literals.push_back(std::move(*literal));
      text = *rest;
    }
    if (lost) break;
    {
      std::lock_guard lock(mutex_);
      log_.push_back(cmd);
    }
    dispatch(c, cmd);
  }
  std::lock_guard lock(mutex_);
  auto& fds = threads_->fds;
  fds.erase(std::remove(fds.begin(), fds.end(), fd), fds.end());
  ::close(fd);
}

void FakeImapServer::dispatch(FakeExchange::Connection& c, const FakeCommand& cmd) {
  FakeExchange x(*this, c, cmd);
  Handler handler;
  {
    std::lock_guard lock(mutex_);
    if (!expectations_.empty()) {
      auto& e = expectations_.front();
      if (std::regex_search(cmd.text, e->pattern)) {
        std::string response = e->response;
        expectations_.erase(expectations_.begin());
        for (size_t p; (p = response.find("$TAG")) != std::string::npos;) response.replace(p, 4, cmd.tag);
        c.send(response);
        return;
      }
      unexpected_.push_back(cmd.text);
    }
    for (auto& rule : rules_) {
      if (rule->left == 0 || !std::regex_search(cmd.text, rule->pattern)) continue;
      if (rule->left > 0) --rule->left;
      handler = rule->handler;
      break;
    }
  }
  if (handler) handler(x);
  else standard(x);
  if (x.close_) c.closed = true;
}

void FakeImapServer::expect(std::string pattern, std::string response) {
  std::lock_guard lock(mutex_);
  expectations_.push_back(std::make_unique<Expectation>(
      Expectation{pattern, std::regex(pattern, std::regex::ECMAScript | std::regex::icase), std::move(response)}));
}

void FakeImapServer::on(std::string pattern, Handler handler, int times) {
  std::lock_guard lock(mutex_);
  rules_.push_back(std::make_unique<Rule>(
      Rule{std::regex(pattern, std::regex::ECMAScript | std::regex::icase), std::move(handler), times > 0 ? times : -1}));
}

void FakeImapServer::on(std::string pattern, std::string response, int times) {
  on(
      std::move(pattern),
      [response](FakeExchange& x) {
        std::string r = response;
        for (size_t p; (p = r.find("$TAG")) != std::string::npos;) r.replace(p, 4, x.tag());
        x.send(r);
      },
      times);
}

void FakeImapServer::clear_rules() {
  std::lock_guard lock(mutex_);
  rules_.clear();
}

std::vector<std::string> FakeImapServer::unmet() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (auto& e : expectations_) out.push_back(e->text);
  return out;
}

std::vector<std::string> FakeImapServer::unexpected() const {
  std::lock_guard lock(mutex_);
  return unexpected_;
}

void FakeImapServer::set_capabilities(std::string caps) {
  std::lock_guard lock(mutex_);
  capabilities_ = std::move(caps);
}

void FakeImapServer::set_reports_uidnext(bool select, bool status) {
  std::lock_guard lock(mutex_);
  select_uidnext_ = select;
  status_uidnext_ = status;
}

void FakeImapServer::set_permanent_flags(std::string flags) {
  std::lock_guard lock(mutex_);
  permanent_flags_ = std::move(flags);
}

void FakeImapServer::set_login(std::string user, std::string password) {
  std::lock_guard lock(mutex_);
  user_ = std::move(user);
  password_ = std::move(password);
}

void FakeImapServer::set_greeting(std::string raw) {
  std::lock_guard lock(mutex_);
  greeting_ = std::move(raw);
}

FakeFolder* FakeImapServer::find(const std::string& name) {
  for (auto& f : folders_)
    if (f.name == name || ((case_insensitive_ || iequals(name, "INBOX")) && iequals(f.name, name))) return &f;
  return nullptr;
}

const FakeFolder* FakeImapServer::find(const std::string& name) const {
  return const_cast<FakeImapServer*>(this)->find(name);
}

void FakeImapServer::add_folder(const std::string& name, uint32_t uidvalidity, std::vector<std::string> attributes) {
  std::lock_guard lock(mutex_);
  if (FakeFolder* f = find(name)) {
    f->uidvalidity = uidvalidity;
    f->attributes = std::move(attributes);
    return;
  }
  folders_.push_back(FakeFolder{name, std::move(attributes), true, uidvalidity, 1, {}});
}

uint32_t FakeImapServer::add_message(const std::string& folder, std::string body, std::vector<std::string> flags,
                                     std::string internaldate) {
  std::lock_guard lock(mutex_);
  FakeFolder* f = find(folder);
  if (!f) throw std::out_of_range("fake IMAP server: no folder " + folder);
  uint32_t uid = f->uidnext++;
  f->messages.push_back(FakeMessage{uid, std::move(flags), std::move(internaldate), std::move(body), 0, 0, {}});
  return uid;
}

void FakeImapServer::remove_message(const std::string& folder, uint32_t uid) {
  std::lock_guard lock(mutex_);
  if (FakeFolder* f = find(folder))
    std::erase_if(f->messages, [&](const FakeMessage& m) { return m.uid == uid; });
}

void FakeImapServer::set_flags(const std::string& folder, uint32_t uid, std::vector<std::string> flags) {
  std::lock_guard lock(mutex_);
  if (FakeFolder* f = find(folder))
    for (auto& m : f->messages)
      if (m.uid == uid) m.flags = flags;
}

void FakeImapServer::renumber(const std::string& folder, uint32_t new_uidvalidity) {
  std::lock_guard lock(mutex_);
  FakeFolder* f = find(folder);
  if (!f) throw std::out_of_range("fake IMAP server: no folder " + folder);
  f->uidvalidity = new_uidvalidity;
  f->uidnext = 1;
  for (auto& m : f->messages) m.uid = f->uidnext++;
}

FakeFolder FakeImapServer::folder(const std::string& name) const {
  std::lock_guard lock(mutex_);
  const FakeFolder* f = find(name);
  if (!f) throw std::out_of_range("fake IMAP server: no folder " + name);
  return *f;
}

bool FakeImapServer::has_folder(const std::string& name) const {
  std::lock_guard lock(mutex_);
  return find(name) != nullptr;
}

std::vector<FakeCommand> FakeImapServer::commands() const {
  std::lock_guard lock(mutex_);
  return log_;
}

size_t FakeImapServer::connections() const {
  std::lock_guard lock(mutex_);
  return accepted_;
}

// --- the standard behaviour ------------------------------------------------------------

std::string FakeImapServer::fetch_response(FakeExchange& x, const FakeFolder& f, size_t index) {
  const FakeMessage& m = f.messages[index];
  std::string items = upper(x.command().text);
  std::vector<std::string> parts{fmt::format("UID {}", m.uid)};
  if (items.find("FLAGS") != std::string::npos) parts.push_back("FLAGS (" + join(m.flags) + ")");
  if (items.find("INTERNALDATE") != std::string::npos) parts.push_back("INTERNALDATE " + quote(m.internaldate));
  if (items.find("RFC822.SIZE") != std::string::npos) parts.push_back(fmt::format("RFC822.SIZE {}", m.body.size()));
  if (items.find("MODSEQ") != std::string::npos) parts.push_back(fmt::format("MODSEQ ({})", m.uid + 1));
  if (gmail_ && items.find("X-GM-MSGID") != std::string::npos) parts.push_back(fmt::format("X-GM-MSGID {}", m.gm_msgid));
  if (gmail_ && items.find("X-GM-THRID") != std::string::npos) parts.push_back(fmt::format("X-GM-THRID {}", m.gm_thrid));
  if (gmail_ && items.find("X-GM-LABELS") != std::string::npos) parts.push_back("X-GM-LABELS (" + label_list(m.gm_labels) + ")");
  std::string out = fmt::format("* {} FETCH ({}", index + 1, join(parts));
  if (items.find("BODY.PEEK[]") != std::string::npos || items.find("BODY[]") != std::string::npos)
    out += fmt::format(" BODY[] {{{}}}\r\n{}", m.body.size(), m.body);
  return out + ")\r\n";
}

void FakeImapServer::standard_fetch(FakeExchange& x, const std::function<bool(FakeExchange&, uint32_t)>* after) {
  std::vector<uint32_t> uids;
  std::string selected = x.selected();
  {
    std::lock_guard lock(mutex_);
    const FakeFolder* f = find(selected);
    if (!f) {
      x.tagged("BAD no folder selected");
      return;
    }
    auto tokens = tokenize(x.command().text);
    if (tokens.size() < 3) {
      x.tagged("BAD missing arguments");
      return;
    }
    std::vector<uint32_t> present;
    for (auto& m : f->messages) present.push_back(m.uid);
    uint32_t max = present.empty() ? 0 : present.back();
    try {
      auto set = parse_set(tokens[2].text, max, present);
      uids.assign(set.begin(), set.end());
    } catch (const std::exception&) {
      x.tagged("BAD invalid sequence set");
      return;
    }
  }
  for (uint32_t uid : uids) {
    std::string response;
    {
      std::lock_guard lock(mutex_);
      const FakeFolder* f = find(selected);
      for (size_t i = 0; f && i < f->messages.size(); ++i)
        if (f->messages[i].uid == uid) response = fetch_response(x, *f, i);
    }
    if (response.empty()) continue;  // gone meanwhile
    x.send(response);
    if (after && *after && !(*after)(x, uid)) return;
  }
  x.tagged("OK UID FETCH completed");
}

void FakeImapServer::standard(FakeExchange& x) {
  const FakeCommand& cmd = x.command();
  auto tokens = tokenize(cmd.text);
  std::string verb = tokens.empty() ? "" : upper(tokens[0].text);
  if (verb == "UID" && tokens.size() > 1) verb += " " + upper(tokens[1].text);
  auto arg = [&](size_t i) { return i < tokens.size() ? string_value(tokens[i], cmd.literals) : std::string(); };
  std::lock_guard lock(mutex_);

  if (verb == "CAPABILITY") {
    x.untagged("CAPABILITY " + capabilities_);
    x.tagged("OK CAPABILITY completed");
  } else if (verb == "NOOP") {
    x.tagged("OK NOOP completed");
  } else if (verb == "LOGIN") {
    if (!user_.empty() && (arg(1) != user_ || arg(2) != password_)) {
      x.tagged("NO [AUTHENTICATIONFAILED] Authentication failed.");
    } else {
      x.tagged(fmt::format("OK [CAPABILITY {}] Logged in", capabilities_));
    }
  } else if (verb == "LOGOUT") {
    x.untagged("BYE Logging out");
    x.tagged("OK Logout completed");
    x.close();
  } else if (verb == "LIST" || verb == "LSUB") {
    std::string pattern = arg(2);
    if (verb == "LIST" && pattern.empty()) {
      x.untagged("LIST (\\Noselect) \"/\" \"\"");
    } else {
      for (auto& f : folders_) {
        if (verb == "LSUB" && !f.subscribed) continue;
        x.untagged(fmt::format("{} ({}) \"/\" {}", verb, join(f.attributes), quote(f.name)));
      }
    }
    x.tagged("OK " + verb + " completed");
  } else if (verb == "NAMESPACE") {
    x.untagged("NAMESPACE ((\"\" \"/\")) NIL NIL");
    x.tagged("OK NAMESPACE completed");
  } else if (verb == "STATUS") {
    const FakeFolder* f = find(arg(1));
    if (!f) {
      x.tagged("NO [NONEXISTENT] Mailbox doesn't exist");
      return;
    }
    std::string asked = tokens.size() > 2 ? upper(tokens[2].text) : "";
    std::vector<std::string> items;
    if (asked.find("MESSAGES") != std::string::npos) items.push_back(fmt::format("MESSAGES {}", f->messages.size()));
    if (asked.find("UIDNEXT") != std::string::npos && status_uidnext_) items.push_back(fmt::format("UIDNEXT {}", f->uidnext));
    if (asked.find("UIDVALIDITY") != std::string::npos) items.push_back(fmt::format("UIDVALIDITY {}", f->uidvalidity));
    x.untagged(fmt::format("STATUS {} ({})", quote(f->name), join(items)));
    x.tagged("OK STATUS completed");
  } else if (verb == "SELECT" || verb == "EXAMINE") {
    const FakeFolder* f = find(arg(1));
    bool noselect = f && std::any_of(f->attributes.begin(), f->attributes.end(),
                                     [](const std::string& a) { return iequals(a, "\\Noselect"); });
    if (!f || noselect) {
      x.connection_.selected.clear();
      x.tagged("NO [NONEXISTENT] Mailbox doesn't exist");
      return;
    }
    x.connection_.selected = f->name;
    x.connection_.read_only = verb == "EXAMINE";
    x.untagged("FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)");
    x.untagged("OK [PERMANENTFLAGS (" + permanent_flags_ + ")] Flags permitted.");
    x.untagged(fmt::format("{} EXISTS", f->messages.size()));
    x.untagged("0 RECENT");
    x.untagged(fmt::format("OK [UIDVALIDITY {}] UIDs valid", f->uidvalidity));
    if (select_uidnext_) x.untagged(fmt::format("OK [UIDNEXT {}] Predicted next UID", f->uidnext));
    x.tagged(verb == "EXAMINE" ? "OK [READ-ONLY] Examine completed" : "OK [READ-WRITE] Select completed");
  } else if (verb == "UID SEARCH") {
    const FakeFolder* f = find(x.selected());
    if (!f) {
      x.tagged("BAD no folder selected");
      return;
    }
    std::string line = "SEARCH";
    std::string criteria = upper(cmd.text);
    bool by_id = criteria.find("HEADER MESSAGE-ID") != std::string::npos;
    std::string id = by_id && tokens.size() > 4 ? string_value(tokens[4], cmd.literals) : "";
    for (auto& m : f->messages)
      if (!by_id || m.body.find(id) != std::string::npos) line += fmt::format(" {}", m.uid);
    x.untagged(line);
    x.tagged("OK SEARCH completed");
  } else if (verb == "UID FETCH") {
    standard_fetch(x, nullptr);
  } else if (verb == "UID STORE" && gmail_ && tokens.size() >= 5 && upper(tokens[3].text).find("X-GM-LABELS") != std::string::npos) {
    FakeFolder* f = find(x.selected());
    std::string op = upper(tokens[3].text);
    if (!f || op[0] != '+') {
      x.tagged("BAD only +X-GM-LABELS in the selected folder here");
      return;
    }
    std::vector<std::string> labels;
    for (auto& t : tokenize(tokens[4].text)) labels.push_back(string_value(t, cmd.literals));
    std::vector<uint32_t> uids;
    std::vector<uint32_t> present;
    for (auto& m : f->messages) present.push_back(m.uid);
    for (uint32_t uid : parse_set(tokens[2].text, present.empty() ? 0 : present.back(), present)) uids.push_back(uid);
    for (uint32_t uid : uids) {
      uint64_t msgid = 0;
      for (auto& m : f->messages)
        if (m.uid == uid) msgid = m.gm_msgid;
      if (!msgid) continue;
      add_gmail_labels(msgid, labels);
      f = find(x.selected());
      if (op.find(".SILENT") == std::string::npos)
        for (size_t i = 0; i < f->messages.size(); ++i)
          if (f->messages[i].uid == uid)
            x.untagged(fmt::format("{} FETCH (X-GM-LABELS ({}) UID {})", i + 1, label_list(f->messages[i].gm_labels), uid));
    }
    x.tagged("OK Store completed");
  } else if (verb == "UID STORE") {
    FakeFolder* f = find(x.selected());
    if (!f || tokens.size() < 5) {
      x.tagged("BAD no folder selected");
      return;
    }
    uint32_t uid = static_cast<uint32_t>(std::stoul(tokens[2].text));
    std::vector<std::string> flags;
    for (auto& t : tokenize(tokens[4].text)) flags.push_back(t.text);
    for (auto& m : f->messages)
      if (m.uid == uid) m.flags = flags;
    x.tagged("OK Store completed");
  } else if (verb == "CREATE") {
    std::string name = arg(1);
    for (auto& r : reserved_) {
      std::string_view owned = r.ends_with('/') ? std::string_view(r).substr(0, r.size() - 1) : std::string_view(r);
      bool below = r.ends_with('/') && name.size() > r.size() && iequals(name.substr(0, r.size()), r);
      if (iequals(name, owned) || below) {
        x.tagged("NO [CANNOT] Reserved folder name");
        return;
      }
    }
    if (find(name)) {
      x.tagged("NO [ALREADYEXISTS] Mailbox exists");
      return;
    }
    folders_.push_back(FakeFolder{name, {"\\HasNoChildren"}, false, static_cast<uint32_t>(1000 + folders_.size()), 1, {}});
    x.tagged("OK Create completed");
  } else if (verb == "SUBSCRIBE") {
    if (FakeFolder* f = find(arg(1))) f->subscribed = true;
    x.tagged("OK Subscribe completed");
  } else if (verb == "APPEND") {
    FakeFolder* f = find(arg(1));
    if (!f) {
      x.tagged("NO [TRYCREATE] Mailbox doesn't exist");
      return;
    }
    std::vector<FakeMessage> added;
    FakeMessage next;
    for (size_t i = 2; i < tokens.size(); ++i) {
      const Token& t = tokens[i];
      if (t.kind == Token::list) {
        for (auto& fl : tokenize(t.text)) next.flags.push_back(fl.text);
      } else if (t.kind == Token::string) {
        next.internaldate = t.text;
      } else if (t.kind == Token::literal) {
        next.body = string_value(t, cmd.literals);
        added.push_back(std::move(next));
        next = FakeMessage{};
      }
    }
    if (added.empty()) {
      x.tagged("BAD APPEND without a message");
      return;
    }
    uint32_t first = f->uidnext;
    std::string folder_name = f->name;
    for (auto& m : added) {
      m.uid = f->uidnext++;
      if (gmail_) {
        m.gm_msgid = m.gm_thrid = next_msgid_++;
        std::string label = gmail_label_of(folder_name);
        if (!label.empty()) m.gm_labels.push_back(label);
        if (folder_name != kAllMail && folder_name != "[Gmail]/Spam" && folder_name != "[Gmail]/Trash") {
          FakeFolder* all = find(kAllMail);
          FakeMessage copy = m;
          copy.uid = all->uidnext++;
          all->messages.push_back(std::move(copy));
          f = find(folder_name);
        }
      }
      f->messages.push_back(std::move(m));
    }
    uint32_t last = f->uidnext - 1;
    x.tagged(first == last ? fmt::format("OK [APPENDUID {} {}] Append completed", f->uidvalidity, first)
                           : fmt::format("OK [APPENDUID {} {}:{}] Append completed", f->uidvalidity, first, last));
  } else {
    x.tagged("BAD Unknown command");
  }
}

// --- Gmail's dialect ---

std::string FakeImapServer::gmail_folder_of(const std::string& label) {
  if (label == "\\Inbox") return "INBOX";
  if (label == "\\Sent") return "[Gmail]/Sent Mail";
  if (label == "\\Starred") return "[Gmail]/Starred";
  if (label == "\\Important") return "[Gmail]/Important";
  if (label == "\\Draft") return "[Gmail]/Drafts";
  if (!label.empty() && label[0] == '\\') return "";
  return label;
}

void FakeImapServer::set_gmail() {
  std::lock_guard lock(mutex_);
  gmail_ = true;
  capabilities_ = "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA CHILDREN X-GM-EXT-1 UIDPLUS MOVE CONDSTORE LITERAL- "
                  "SPECIAL-USE "
                  "APPENDLIMIT=35651584";
  auto ensure = [&](const std::string& name, std::vector<std::string> attributes) {
    if (!find(name)) folders_.push_back(FakeFolder{name, std::move(attributes), true, 1, 1, {}});
  };
  ensure("[Gmail]", {"\\HasChildren", "\\Noselect"});
  ensure(kAllMail, {"\\All", "\\HasNoChildren"});
  ensure("[Gmail]/Drafts", {"\\Drafts", "\\HasNoChildren"});
  ensure("[Gmail]/Important", {"\\HasNoChildren", "\\Important"});
  ensure("[Gmail]/Sent Mail", {"\\HasNoChildren", "\\Sent"});
  ensure("[Gmail]/Spam", {"\\HasNoChildren", "\\Junk"});
  ensure("[Gmail]/Starred", {"\\Flagged", "\\HasNoChildren"});
  ensure("[Gmail]/Trash", {"\\HasNoChildren", "\\Trash"});
  std::sort(folders_.begin(), folders_.end(), [](const FakeFolder& a, const FakeFolder& b) {
    return a.name == "INBOX" ? b.name != "INBOX" : b.name != "INBOX" && a.name < b.name;
  });
}

void FakeImapServer::add_gmail_labels(uint64_t msgid, const std::vector<std::string>& labels) {
  FakeMessage proto;
  for (auto& f : folders_)
    for (auto& m : f.messages)
      if (m.gm_msgid == msgid) proto = m;
  for (auto& label : labels) {
    if (std::find(proto.gm_labels.begin(), proto.gm_labels.end(), label) != proto.gm_labels.end()) continue;
    proto.gm_labels.push_back(label);
    std::string folder = gmail_folder_of(label);
    if (folder.empty()) continue;
    if (!find(folder)) folders_.push_back(FakeFolder{folder, {"\\HasNoChildren"}, true, 1, 1, {}});
    FakeFolder* f = find(folder);
    if (std::none_of(f->messages.begin(), f->messages.end(), [&](const FakeMessage& m) { return m.gm_msgid == msgid; })) {
      FakeMessage copy = proto;
      copy.uid = f->uidnext++;
      f->messages.push_back(std::move(copy));
    }
  }
  for (auto& f : folders_)
    for (auto& m : f.messages)
      if (m.gm_msgid == msgid) m.gm_labels = proto.gm_labels;
}

uint64_t FakeImapServer::add_gmail_message(std::string body, std::vector<std::string> labels,
                                           std::vector<std::string> flags, std::string internaldate,
                                           std::string only_in) {
  std::lock_guard lock(mutex_);
  if (!gmail_) throw std::logic_error("fake IMAP server: add_gmail_message without set_gmail");
  uint64_t msgid = next_msgid_++;
  FakeMessage m{0, std::move(flags), std::move(internaldate), std::move(body), msgid, msgid, {}};
  FakeFolder* f = find(only_in.empty() ? std::string(kAllMail) : only_in);
  if (!f) throw std::out_of_range("fake IMAP server: no folder " + only_in);
  m.uid = f->uidnext++;
  f->messages.push_back(std::move(m));
  if (only_in.empty()) add_gmail_labels(msgid, labels);
  return msgid;
}

std::vector<std::pair<std::string, uint32_t>> FakeImapServer::gmail_copies(uint64_t msgid) const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::string, uint32_t>> out;
  for (auto& f : folders_)
    for (auto& m : f.messages)
      if (m.gm_msgid == msgid) out.emplace_back(f.name, m.uid);
  return out;
}

void FakeImapServer::set_case_insensitive_names(bool on) {
  std::lock_guard lock(mutex_);
  case_insensitive_ = on;
}

void FakeImapServer::set_reserved_names(std::vector<std::string> names) {
  std::lock_guard lock(mutex_);
  reserved_ = std::move(names);
}

imap::Endpoint FakeImapServer::endpoint(int timeout_seconds) const {
  imap::Endpoint e;
  e.host = host_;
  e.port = port_;
  e.tls = imap::TlsMode::none;
  e.timeout = std::chrono::seconds(timeout_seconds);
  return e;
}

double paced_rate(const std::vector<FakeCommand>& commands, const std::function<double(const FakeCommand&)>& amount) {
  std::vector<std::pair<std::chrono::steady_clock::time_point, double>> paced;
  for (auto& c : commands)
    if (double a = amount(c); a > 0) paced.emplace_back(c.received, a);
  if (paced.size() < 2) return 0;
  std::sort(paced.begin(), paced.end(), [](auto& a, auto& b) { return a.first < b.first; });
  double after_first = 0;
  for (size_t i = 1; i < paced.size(); ++i) after_first += paced[i].second;
  double seconds = std::chrono::duration<double>(paced.back().first - paced.front().first).count();
  return seconds > 0 ? after_first / seconds : 0;
}

}  // namespace imapstage::testing
