#include "smtp/greylist.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <limits>

#include "core/files.h"

// Journal format: one record per line, each the full new state of one entry, so loading is
// "the last line for a key wins" and compaction is writing each entry once:
//   w KEY FIRST_ATTEMPT        a triplet waiting for its retry
//   p KEY LAST_SEEN            a triplet that passed
//   c CLIENT PASSED LAST_SEEN  a client key and how many of its triplets passed (auto_allow)
// followed by a space and the FNV-1a checksum of the record as 8 hex digits. The checksum is what
// makes a torn last line ("p KEY 17000" cut to "p KEY 170" still parses) or garbage detectable.
// Lines starting with '#' are comments. Times are the caller's clock in seconds.
//
// Appends are a plain write() with no fsync: losing the tail in a crash only means some clients
// are greylisted once more, which is harmless (mail is only delayed); an fsync per SMTP
// command would stall the event loop. cleanup() is the one place that fsyncs.

namespace tern::smtp {
namespace {

constexpr std::string_view kHeader =
    "# tern greylist journal 1: w KEY FIRST | p KEY LAST_SEEN | c CLIENT PASSED LAST_SEEN, then a checksum\n";
constexpr size_t kMaxLine = 4096;  // longer lines are garbage, not buffered

uint32_t fnv1a(std::string_view s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

void append_hex(std::string& out, const unsigned char* bytes, size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; ++i) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 15];
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool parse_hex(std::string_view text, unsigned char* out, size_t n) {
  if (text.size() != 2 * n) return false;
  for (size_t i = 0; i < n; ++i) {
    int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return true;
}

template <typename T>
bool parse_number(std::string_view text, T& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && !text.empty();
}

// Client keys are text; only an address that failed to parse can hold blanks or controls.
std::string escape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c <= ' ' || c >= 0x7f || c == '%') {
      out += '%';
      append_hex(out, &c, 1);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

bool unescape(std::string_view s, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    unsigned char c;
    if (!parse_hex(s.substr(i + 1, 2), &c, 1)) return false;
    out += static_cast<char>(c);
    i += 2;
  }
  return true;
}

void finish_line(std::string& line, size_t start) {
  uint32_t sum = fnv1a(std::string_view(line).substr(start));
  unsigned char bytes[4] = {static_cast<unsigned char>(sum >> 24), static_cast<unsigned char>(sum >> 16),
                            static_cast<unsigned char>(sum >> 8), static_cast<unsigned char>(sum)};
  line += ' ';
  append_hex(line, bytes, 4);
  line += '\n';
}

void triplet_line(std::string& out, const Greylist::Key& key, int64_t time, bool passed) {
  size_t start = out.size();
  out += passed ? "p " : "w ";
  append_hex(out, key.data(), key.size());
  out += ' ';
  out += std::to_string(time);
  finish_line(out, start);
}

void client_line(std::string& out, const std::string& client, uint32_t passed, int64_t last_seen) {
  size_t start = out.size();
  out += "c ";
  out += escape(client);
  out += ' ';
  out += std::to_string(passed);
  out += ' ';
  out += std::to_string(last_seen);
  finish_line(out, start);
}

void append_lower(std::string& out, std::string_view s) {
  for (char c : s) out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

void append_field(std::string& out, std::string_view s, bool lower) {
  uint32_t n = static_cast<uint32_t>(s.size());
  out.append(reinterpret_cast<const char*>(&n), sizeof n);  // length-prefixed: fields cannot run together
  if (lower)
    append_lower(out, s);
  else
    out += s;
}

// The key is 128 bits of SHA-256 over the client key, sender and recipient rather than the text:
// - the pending cap bounds memory only if entries have a fixed size, and sender and recipient come
//   from unauthenticated clients (up to 256 bytes each); 16-byte keys hold 1,000,000 entries in about 60 MB;
// - std::hash of a string is unseeded, so chosen addresses could pile into one bucket; SHA-256 bits
//   cost an attacker a brute-force search per colliding key;
// - the journal holds no mail addresses (Postgrey's --privacy does the same).
// The price is that admins cannot grep the journal for an address; client keys (IPs and networks)
// stay readable in the `c` lines. 128 bits make an accidental collision practically impossible.
Greylist::Key triplet_key(bool triplet, const std::string& client, std::string_view sender,
                          std::string_view recipient) {
  std::string material(1, triplet ? 't' : 'c');  // IP-only entries never match triplet entries
  append_field(material, client, false);
  if (triplet) {
    append_field(material, sender, true);
    append_field(material, recipient, true);
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(material.data()), material.size(), digest);
  Greylist::Key key;
  std::copy(digest, digest + key.size(), key.begin());
  return key;
}

std::string describe(std::string_view what, const std::filesystem::path& path, int err) {
  std::string fix;
  std::filesystem::path dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      fix = "create the directory " + dir.string() + " or choose another path";
      break;
    case EACCES:
    case EPERM:
      fix = "make the file and " + dir.string() + " readable and writable by the user tern runs as";
      break;
    case EISDIR:
      fix = "give the path of a file, not of a directory";
      break;
    case EROFS:
      fix = "choose a path on a writable file system";
      break;
    case ENOSPC:
    case EDQUOT:
      fix = "free space on the file system of " + dir.string();
      break;
    default:
      fix = "check the path and its file system";
  }
  return "greylist journal " + path.string() + ": cannot " + std::string(what) + ": " + std::strerror(err) + "; " + fix;
}

}  // namespace

std::string greylist_client_key(std::string_view ip, GreylistKey key) {
  std::string text(ip);
  unsigned char bytes[16] = {};
  char out[INET6_ADDRSTRLEN];
  bool v4 = inet_pton(AF_INET, text.c_str(), bytes) == 1;
  if (!v4) {
    if (inet_pton(AF_INET6, text.c_str(), bytes) != 1) return text;
    static constexpr unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::equal(mapped, mapped + 12, bytes)) {
      std::copy(bytes + 12, bytes + 16, bytes);
      v4 = true;
    }
  }
  bool network = key == GreylistKey::network;
  if (network) std::fill(bytes + (v4 ? 3 : 8), bytes + 16, 0);
  if (!inet_ntop(v4 ? AF_INET : AF_INET6, bytes, out, sizeof out)) return text;
  std::string result(out);
  if (network) result += v4 ? "/24" : "/64";
  return result;
}

size_t Greylist::KeyHash::operator()(const Key& k) const noexcept {
  size_t h;  // the key is already uniformly distributed
  std::memcpy(&h, k.data(), sizeof h);
  return h;
}

Greylist::Greylist(GreylistSettings settings) : settings_(settings) {}

Greylist::~Greylist() {
  if (fd_ >= 0) ::close(fd_);
}

// Boundaries: a waiting triplet may be retried up to retry_window seconds after its first
// attempt inclusive; a passed triplet or client is gone once `expiry` seconds have elapsed.
bool Greylist::expired(const Triplet& t, int64_t now) const {
  return t.passed ? now - t.time >= settings_.expiry : now - t.time > settings_.retry_window;
}

bool Greylist::expired(const Client& c, int64_t now) const { return now - c.last_seen >= settings_.expiry; }

bool Greylist::allowed(const Client& c) const { return settings_.auto_allow > 0 && c.passed >= settings_.auto_allow; }

// "Last seen" moves (and is journalled) at most this often: a busy sender then costs one line an
// hour instead of one per message, and expiry comes at most this much early.
int64_t Greylist::touch_interval() const { return std::min<int64_t>(3600, settings_.expiry / 16); }

size_t Greylist::allowed_clients() const {
  return static_cast<size_t>(
      std::count_if(clients_.begin(), clients_.end(), [&](const auto& c) { return allowed(c.second); }));
}

void Greylist::append(std::string_view line) {
  if (fd_ < 0) return;
  std::error_code ec;
  if (needs_newline_) {
    // After a failed (possibly partial) write: end that fragment so it cannot swallow this line.
    ec = files::write_all(fd_, "\n");
    if (!ec) needs_newline_ = false;
  }
  if (!ec) ec = files::write_all(fd_, line);
  if (ec) {
    needs_newline_ = true;
    if (append_error_.empty()) append_error_ = describe("append", path_, ec.value()) + " (the state is kept in memory)";
  }
}

void Greylist::set_triplet(const Key& key, Triplet t, bool write) {
  auto [it, inserted] = triplets_.try_emplace(key, t);
  if (!inserted) {
    if (!it->second.passed) --pending_;
    it->second = t;
  }
  if (!t.passed) ++pending_;
  if (write) {
    std::string line;
    triplet_line(line, key, t.time, t.passed);
    append(line);
  }
}

void Greylist::set_client(const std::string& client, Client c, bool write) {
  clients_[client] = c;
  if (write) {
    std::string line;
    client_line(line, client, c.passed, c.last_seen);
    append(line);
  }
}

void Greylist::touch_client(const std::string& client, int64_t now) {
  auto it = clients_.find(client);
  if (it == clients_.end() || expired(it->second, now)) return;
  if (now > it->second.last_seen && now - it->second.last_seen >= touch_interval())
    set_client(client, {it->second.passed, now}, true);
}

GreylistVerdict Greylist::check(std::string_view client_ip, std::string_view sender, std::string_view recipient,
                                int64_t now) {
  try {
    std::string client = greylist_client_key(client_ip, settings_.key);
    if (auto c = clients_.find(client); c != clients_.end() && allowed(c->second) && !expired(c->second, now)) {
      touch_client(client, now);
      return GreylistVerdict::pass;
    }
    Key key = triplet_key(settings_.triplet, client, sender, recipient);
    auto it = triplets_.find(key);
    if (it == triplets_.end()) {
      if (pending_ >= settings_.max_pending) return GreylistVerdict::pass;  // fail open: see GreylistSettings
      set_triplet(key, {now, false}, true);
      return GreylistVerdict::first_attempt;
    }
    Triplet t = it->second;
    if (expired(t, now)) {  // starts over in the same entry, so even at the cap
      set_triplet(key, {now, false}, true);
      return GreylistVerdict::first_attempt;
    }
    if (t.passed) {
      // Active senders never expire: passes move "last seen" (at most once per touch_interval).
      if (now > t.time && now - t.time >= touch_interval()) set_triplet(key, {now, true}, true);
      touch_client(client, now);
      return GreylistVerdict::pass;
    }
    if (now - t.time < settings_.hold) return GreylistVerdict::too_early;
    set_triplet(key, {now, true}, true);  // "last seen" starts at the retry, not the first attempt
    Client c;
    if (auto found = clients_.find(client); found != clients_.end() && !expired(found->second, now)) c = found->second;
    if (c.passed < std::numeric_limits<uint32_t>::max()) ++c.passed;
    c.last_seen = now;
    set_client(client, c, true);
    return GreylistVerdict::pass;
  } catch (const std::exception&) {
    return GreylistVerdict::pass;  // out of memory: fail open like the cap
  }
}

// One journal line (without its newline) into the state; false when it is torn or garbage.
bool Greylist::apply_line(std::string_view line, int64_t now) {
  if (line.size() < 10 || line[line.size() - 9] != ' ') return false;
  std::string_view body = line.substr(0, line.size() - 9);
  unsigned char sum[4];
  if (!parse_hex(line.substr(line.size() - 8), sum, 4)) return false;
  uint32_t expected = uint32_t{sum[0]} << 24 | uint32_t{sum[1]} << 16 | uint32_t{sum[2]} << 8 | sum[3];
  if (fnv1a(body) != expected) return false;

  std::string_view fields[5];
  size_t count = 0;
  for (size_t start = 0; start <= body.size();) {
    size_t end = std::min(body.find(' ', start), body.size());
    if (count == 5) return false;
    fields[count++] = body.substr(start, end - start);
    start = end + 1;
  }
  if ((fields[0] == "w" || fields[0] == "p") && count == 3) {
    Key key;
    int64_t time;
    if (!parse_hex(fields[1], key.data(), key.size()) || !parse_number(fields[2], time)) return false;
    Triplet t{time, fields[0] == "p"};
    auto it = triplets_.find(key);
    if (expired(t, now)) {
      if (it != triplets_.end()) {  // this line replaced the older state, and has run out too
        if (!it->second.passed) --pending_;
        triplets_.erase(it);
      }
    } else if (it != triplets_.end() || t.passed || pending_ < settings_.max_pending) {
      set_triplet(key, t, false);
    }
    return true;
  }
  if (fields[0] == "c" && count == 4) {
    std::string client;
    Client c;
    if (!unescape(fields[1], client) || !parse_number(fields[2], c.passed) || !parse_number(fields[3], c.last_seen))
      return false;
    if (expired(c, now))
      clients_.erase(client);
    else
      set_client(client, c, false);
    return true;
  }
  return false;
}

std::error_code Greylist::load(int fd, int64_t now, bool& ends_with_newline) {
  std::string line;
  bool overlong = false;  // inside a line past kMaxLine: dropped up to its newline
  char last = '\n';
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return files::last_error();
    }
    if (n == 0) break;
    last = buf[n - 1];
    std::string_view chunk(buf, static_cast<size_t>(n));
    while (!chunk.empty()) {
      size_t nl = chunk.find('\n');
      std::string_view piece = chunk.substr(0, nl);
      chunk.remove_prefix(nl == std::string_view::npos ? chunk.size() : nl + 1);
      if (!overlong) {
        if (line.size() + piece.size() > kMaxLine) {
          overlong = true;
          line.clear();
        } else {
          line += piece;
        }
      }
      if (nl == std::string_view::npos) break;
      if (overlong)
        ++skipped_lines_;
      else if (!line.empty() && line[0] != '#' && !apply_line(line, now))
        ++skipped_lines_;
      overlong = false;
      line.clear();
    }
  }
  ends_with_newline = last == '\n';
  if (overlong || !line.empty()) ++skipped_lines_;  // the torn last line of a crash
  return {};
}

void Greylist::drop_expired(int64_t now) {
  std::erase_if(triplets_, [&](const auto& entry) {
    if (!expired(entry.second, now)) return false;
    if (!entry.second.passed) --pending_;
    return true;
  });
  std::erase_if(clients_, [&](const auto& entry) { return expired(entry.second, now); });
}

void Greylist::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  path_.clear();
  triplets_.clear();
  clients_.clear();
  pending_ = 0;
  skipped_lines_ = 0;
  append_error_.clear();
  needs_newline_ = false;
}

bool Greylist::open(const std::filesystem::path& path, int64_t now, std::string& error) {
  reset();
  try {
    bool ends_with_newline = true;
    int in = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0 && errno != ENOENT) {
      error = describe("read", path, errno);
      return false;
    }
    if (in >= 0) {
      std::error_code ec = load(in, now, ends_with_newline);
      ::close(in);
      if (ec) {
        reset();
        error = describe("read", path, ec.value());
        return false;
      }
    }
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd_ < 0) {
      error = describe("open for appending", path, errno);
      reset();
      return false;
    }
    path_ = path;
    struct stat st {};
    if (::fstat(fd_, &st) == 0 && st.st_size == 0) {
      append(kHeader);
    } else if (!ends_with_newline) {
      needs_newline_ = true;  // a torn last line: end it so the next record starts on its own line
      append("");
    }
    return true;
  } catch (const std::exception& e) {
    reset();
    error = "greylist journal " + path.string() + ": cannot load: " + e.what();
    return false;
  }
}

bool Greylist::cleanup(int64_t now, std::string& error) {
  try {
    drop_expired(now);
    if (path_.empty()) return true;  // never opened: memory only
    std::filesystem::path tmp = path_;
    tmp += ".tmp";
    std::filesystem::path dir = path_.parent_path().empty() ? std::filesystem::path(".") : path_.parent_path();
    // The temporary file becomes the journal by rename, so its descriptor is the new append
    // descriptor: no reopen that could fail after the switch.
    int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (out < 0) {
      error = describe("create", tmp, errno);
      return false;
    }
    std::string buf(kHeader);
    std::error_code ec;
    auto flush = [&] {
      if (!ec) ec = files::write_all(out, buf);
      buf.clear();
    };
    for (const auto& [key, t] : triplets_) {
      triplet_line(buf, key, t.time, t.passed);
      if (buf.size() >= 65536) flush();
    }
    for (const auto& [client, c] : clients_) {
      client_line(buf, client, c.passed, c.last_seen);
      if (buf.size() >= 65536) flush();
    }
    flush();
    if (!ec) ec = files::fsync_fd(out);
    if (!ec && ::rename(tmp.c_str(), path_.c_str()) != 0) ec = files::last_error();
    if (ec) {
      ::close(out);
      ::unlink(tmp.c_str());
      error = describe("rewrite", path_, ec.value()) + " (the old journal is still in use)";
      return false;
    }
    if (fd_ >= 0) ::close(fd_);
    fd_ = out;
    append_error_.clear();
    needs_newline_ = false;
    if (std::error_code e = files::fsync_dir(dir)) {
      error = describe("sync the directory of", path_, e.value());
      return false;
    }
    return true;
  } catch (const std::exception& e) {
    error = "greylist journal " + path_.string() + ": cannot rewrite: " + e.what();
    return false;
  }
}

}  // namespace tern::smtp
