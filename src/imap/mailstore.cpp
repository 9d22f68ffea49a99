#include "imap/mailstore.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "imap/command.h"
#include "mailbox/index_format.h"

namespace tern::imap {
namespace fs = std::filesystem;
namespace {

std::error_code last_error() { return {errno, std::generic_category()}; }

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_inbox(std::string_view name) {
  if (name.size() != 5) return false;
  std::string l;
  for (char c : name) l += lower(c);
  return l == "inbox";
}

std::error_code make_maildir(const fs::path& dir, bool folder) {
  std::error_code ec;
  for (const char* sub : {"new", "cur", "tmp"}) {
    fs::create_directories(dir / sub, ec);
    if (ec) return ec;
  }
  if (folder) {
    int fd = ::open((dir / "maildirfolder").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return last_error();
    ::close(fd);
  }
  return {};
}

std::error_code write_all_fd(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return last_error();
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

std::string host_for_names() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == 0) return "localhost";
  std::string out;
  for (const char* p = host; *p; ++p) {
    if (*p == '/')
      out += "\\057";
    else if (*p == ':')
      out += "\\072";
    else
      out += *p;
  }
  return out;
}

}  // namespace

std::string special_use_of(std::string_view name) {
  static const std::map<std::string, std::string> known = {
      {"sent", "\\Sent"},   {"sent items", "\\Sent"},     {"sent messages", "\\Sent"},     {"drafts", "\\Drafts"},
      {"trash", "\\Trash"}, {"deleted items", "\\Trash"}, {"deleted messages", "\\Trash"}, {"junk", "\\Junk"},
      {"spam", "\\Junk"},   {"archive", "\\Archive"},     {"archives", "\\Archive"}};
  std::string l;
  for (char c : name) l += lower(c);
  auto it = known.find(l);
  return it == known.end() ? "" : it->second;
}

std::string name_problem(std::string_view name) {
  if (name.empty()) return "the mailbox name is empty";
  if (is_inbox(name)) return "";
  if (name.size() >= 6 && is_inbox(name.substr(0, 5)) && name[5] == hierarchy_separator)
    return "mailboxes inside INBOX are not supported; create it at the top level";
  if (name.find('/') != std::string_view::npos) return "mailbox names cannot hold \"/\"";
  if (name.front() == hierarchy_separator || name.back() == hierarchy_separator ||
      name.find("..") != std::string_view::npos)
    return "mailbox names cannot start or end with \".\" or hold an empty level (\"..\")";
  if (name.size() > 200) return "the mailbox name is longer than 200 octets";
  if (!encode_mutf7(name)) return "the mailbox name is not valid UTF-8 or holds control characters";
  return "";
}

Mailstore::Mailstore(fs::path maildir) : root_(std::move(maildir)) {}

std::optional<fs::path> Mailstore::folder_path(std::string_view name) const {
  if (!name_problem(name).empty()) return std::nullopt;
  if (is_inbox(name)) return root_;
  auto encoded = encode_mutf7(name);
  if (!encoded) return std::nullopt;
  return root_ / ("." + *encoded);
}

bool Mailstore::exists(std::string_view name) const {
  auto path = folder_path(name);
  std::error_code ec;
  return path && fs::is_directory(*path / "cur", ec);
}

std::error_code Mailstore::prepare() {
  if (auto ec = make_maildir(root_, false)) return ec;
  fs::path marker = root_ / "tern-folders";
  std::error_code ec;
  if (fs::exists(marker, ec)) return {};
  for (const char* name : {"Sent", "Drafts", "Trash", "Junk", "Archive"}) {
    if (exists(name)) continue;
    if (auto made = make_maildir(*folder_path(name), true)) return made;
  }
  int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return last_error();
  ::close(fd);
  return {};
}

std::error_code Mailstore::list(std::vector<FolderInfo>& out) const {
  out.clear();
  std::set<std::string> names;
  std::error_code ec;
  for (auto it = fs::directory_iterator(root_, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::string file = it->path().filename().string();
    if (file.size() < 2 || file[0] != '.' || file == "..") continue;
    std::error_code dir_ec;
    if (!it->is_directory(dir_ec) || !fs::is_directory(it->path() / "cur", dir_ec)) continue;
    auto decoded = decode_mutf7(std::string_view(file).substr(1));
    if (!decoded || !name_problem(*decoded).empty() || is_inbox(*decoded)) continue;
    names.insert(*decoded);
  }
  if (ec) return ec;
  // Parents that exist only through their children.
  std::set<std::string> all = names;
  for (const std::string& name : names)
    for (size_t dot = name.find(hierarchy_separator); dot != std::string::npos;
         dot = name.find(hierarchy_separator, dot + 1))
      all.insert(name.substr(0, dot));
  auto has_children = [&](const std::string& name) {
    auto next = all.upper_bound(name);
    return next != all.end() && next->size() > name.size() && next->compare(0, name.size(), name) == 0 &&
           (*next)[name.size()] == hierarchy_separator;
  };
  out.push_back({"INBOX", "", false, true});
  for (const std::string& name : all)
    out.push_back({name, special_use_of(name), has_children(name), names.count(name) > 0});
  return {};
}

std::error_code Mailstore::create(std::string_view name) {
  auto path = folder_path(name);
  if (!path) return std::make_error_code(std::errc::invalid_argument);
  if (exists(name)) return std::make_error_code(std::errc::file_exists);
  return make_maildir(*path, true);
}

std::error_code Mailstore::remove(std::string_view name) {
  if (is_inbox(name)) return std::make_error_code(std::errc::operation_not_supported);
  auto path = folder_path(name);
  if (!path || !exists(name)) return std::make_error_code(std::errc::no_such_file_or_directory);
  std::error_code ec;
  fs::remove_all(*path, ec);
  return ec;
}

std::error_code Mailstore::rename(std::string_view from, std::string_view to) {
  if (is_inbox(to)) return std::make_error_code(std::errc::operation_not_supported);
  if (is_inbox(from)) {
    // RFC 9051 6.3.6: renaming INBOX moves its messages into a new mailbox; INBOX stays, empty,
    // and its children stay where they are.
    if (auto ec = create(to)) return ec;
    fs::path target = *folder_path(to);
    for (const char* sub : {"new", "cur"}) {
      std::error_code ec;
      for (auto it = fs::directory_iterator(root_ / sub, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
        std::string file = it->path().filename().string();
        if (file.empty() || file[0] == '.') continue;
        if (::rename(it->path().c_str(), (target / sub / file).c_str()) != 0 && errno != ENOENT) return last_error();
      }
      if (ec) return ec;
    }
    return {};
  }
  auto source = folder_path(from);
  auto target = folder_path(to);
  if (!source || !target) return std::make_error_code(std::errc::invalid_argument);
  if (!exists(from)) return std::make_error_code(std::errc::no_such_file_or_directory);
  if (exists(to)) return std::make_error_code(std::errc::file_exists);
  // The folder, then its children (".From.x" becomes ".To.x").
  std::string source_dir = source->filename().string();
  std::string target_dir = target->filename().string();
  std::vector<std::pair<fs::path, fs::path>> moves{{*source, *target}};
  std::error_code ec;
  for (auto it = fs::directory_iterator(root_, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::string file = it->path().filename().string();
    if (file.size() > source_dir.size() && file.compare(0, source_dir.size(), source_dir) == 0 &&
        file[source_dir.size()] == '.')
      moves.push_back({it->path(), root_ / (target_dir + file.substr(source_dir.size()))});
  }
  if (ec) return ec;
  for (const auto& [a, b] : moves)
    if (::rename(a.c_str(), b.c_str()) != 0) return last_error();
  // Subscriptions follow the rename.
  auto subscribed = subscriptions();
  bool changed = false;
  for (std::string& s : subscribed) {
    if (s == from || (s.size() > from.size() && s.compare(0, from.size(), from) == 0 && s[from.size()] == '.')) {
      s = std::string(to) + s.substr(from.size());
      changed = true;
    }
  }
  if (changed) {
    std::string text;
    for (const auto& s : subscribed) text += s + "\n";
    std::ofstream(root_ / "subscriptions", std::ios::trunc) << text;
  }
  return {};
}

std::vector<std::string> Mailstore::subscriptions() const {
  std::ifstream in(root_ / "subscriptions");
  std::vector<std::string> out;
  std::string line;
  bool first = true;
  while (std::getline(in, line)) {
    // Dovecot 2.3's version 2 format: "V\t2", then names with TAB as the hierarchy separator.
    if (first && line.rfind("V\t", 0) == 0) {
      first = false;
      continue;
    }
    first = false;
    if (line.empty()) continue;
    std::replace(line.begin(), line.end(), '\t', hierarchy_separator);
    auto decoded = decode_mutf7(line);
    out.push_back(decoded ? *decoded : line);
  }
  return out;
}

std::error_code Mailstore::subscribe(std::string_view name, bool on) {
  std::vector<std::string> list = subscriptions();
  std::string wanted = is_inbox(name) ? "INBOX" : std::string(name);
  auto it = std::find(list.begin(), list.end(), wanted);
  if (on && it == list.end()) list.push_back(wanted);
  if (!on && it != list.end()) list.erase(it);
  std::string text;
  for (const auto& s : list) text += encode_mutf7(s).value_or(s) + "\n";
  fs::path temporary = root_ / "subscriptions.tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return last_error();
  std::error_code ec = write_all_fd(fd, text);
  ::close(fd);
  if (!ec && ::rename(temporary.c_str(), (root_ / "subscriptions").c_str()) != 0) ec = last_error();
  return ec;
}

std::string Mailstore::unique_base(uint64_t size, uint64_t vsize) {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(now).count();
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now).count() % 1000000;
  static const std::string host = host_for_names();
  return std::to_string(seconds) + ".M" + std::to_string(micros) + "P" + std::to_string(::getpid()) + "Q" +
         std::to_string(++sequence_) + "." + host + ",S=" + std::to_string(size) + ",W=" + std::to_string(vsize);
}

std::error_code Mailstore::add_message(const fs::path& folder, std::string_view bytes,
                                       const mailbox::MaildirFlags& flags, int64_t internal_date,
                                       std::string& location) {
  std::string stored;  // tern stores LF line ends (as deliver does)
  stored.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] == '\r' && i + 1 < bytes.size() && bytes[i + 1] == '\n') continue;
    stored += bytes[i];
  }
  mailbox::CrlfSize vsize;
  vsize.feed(stored);
  std::string base = unique_base(stored.size(), vsize.size());
  fs::path temporary = folder / "tmp" / base;
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return last_error();
  std::error_code ec = write_all_fd(fd, stored);
  if (!ec && ::fsync(fd) != 0) ec = last_error();
  if (!ec && internal_date > 0) {
    timespec times[2] = {{internal_date, 0}, {internal_date, 0}};
    ::futimens(fd, times);
  }
  if (::close(fd) != 0 && !ec) ec = last_error();
  mailbox::MaildirName name;
  name.base = base;
  location = "cur/" + mailbox::name_with_flags(name, flags);
  fs::path target = folder / location;
  if (!ec && ::rename(temporary.c_str(), target.c_str()) != 0) ec = last_error();
  if (ec) ::unlink(temporary.c_str());
  if (!ec) {
    int dir = ::open((folder / "cur").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
  }
  return ec;
}

std::error_code Mailstore::copy_message(const fs::path& source, const fs::path& folder,
                                        const mailbox::MaildirFlags& flags, std::string& location) {
  auto parsed = mailbox::parse_maildir_name(source.filename().string());
  struct stat st {};
  if (::stat(source.c_str(), &st) != 0) return last_error();
  uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t vsize = parsed && parsed->vsize ? *parsed->vsize : 0;
  if (vsize == 0) {
    std::ifstream in(source, std::ios::binary);
    std::stringstream all;
    all << in.rdbuf();
    mailbox::CrlfSize counter;
    counter.feed(all.str());
    vsize = counter.size();
  }
  std::string base = unique_base(size, vsize);
  mailbox::MaildirName name;
  name.base = base;
  location = "cur/" + mailbox::name_with_flags(name, flags);
  fs::path target = folder / location;
  if (::link(source.c_str(), target.c_str()) == 0) return {};
  std::error_code ec;
  fs::copy_file(source, folder / "tmp" / base, ec);
  if (ec) return ec;
  if (::rename((folder / "tmp" / base).c_str(), target.c_str()) != 0) return last_error();
  return {};
}

}  // namespace tern::imap
