// vpopmail import: the pure parsers first, then the importer (file I/O and Store writes).
#include "directory/vpopmail.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

namespace tern::directory {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }
bool is_control(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }

// Lines of `text` split at LF; text after the last LF is a line too.
std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    out.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

std::vector<std::string_view> split_fields(std::string_view line, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t at = line.find(sep, start);
    if (at == std::string_view::npos) {
      out.push_back(line.substr(start));
      return out;
    }
    out.push_back(line.substr(start, at - start));
    start = at + 1;
  }
}

std::string_view strip_trailing_blanks(std::string_view s) {
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

std::string_view strip_blanks(std::string_view s) {
  s = strip_trailing_blanks(s);
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  return s;
}

std::optional<uint64_t> parse_u64(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    if (__builtin_mul_overflow(v, uint64_t{10}, &v) || __builtin_add_overflow(v, uint64_t(c - '0'), &v))
      return std::nullopt;
  }
  return v;
}

std::optional<uint32_t> parse_u32(std::string_view s) {
  auto v = parse_u64(s);
  if (!v || *v > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(*v);
}

// A name, path or text from the tree with control and non-ASCII bytes escaped, for messages.
std::string printable(std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (is_control(c) || u >= 0x80) {
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

// The same, quoted.
std::string shown(std::string_view s) { return "\"" + printable(s) + "\""; }

std::string hex_flag(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%02x", v);
  return buf;
}

}  // namespace

namespace vpopmail {

// --- users/assign -------------------------------------------------------------------------------

AssignFile parse_assign(std::string_view text) {
  AssignFile out;
  auto lines = split_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    size_t n = i + 1;
    std::string_view line = lines[i];
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == ".") {
      out.terminated = true;
      break;
    }
    if (line.empty()) continue;
    if (line.front() == '=') {
      out.problems.push_back({n, "an exact qmail-users entry (=...), not a vpopmail domain; skipped"});
      continue;
    }
    if (line.front() != '+') {
      out.problems.push_back({n, "does not start with '+' or '='; skipped"});
      continue;
    }
    auto f = split_fields(line.substr(1), ':');
    if (f.size() < 5) {
      out.problems.push_back(
          {n, "has " + std::to_string(f.size()) + " fields; expected +name-:domain:uid:gid:dir:-:: ; skipped"});
      continue;
    }
    if (f[0].size() < 2 || f[0].back() != '-') {
      out.problems.push_back(
          {n, "prefix entry " + shown(f[0]) + " does not end in '-', so it is not a vpopmail domain; skipped"});
      continue;
    }
    AssignEntry e;
    e.name = to_lower_ascii(f[0].substr(0, f[0].size() - 1));
    e.domain = to_lower_ascii(f[1]);
    auto uid = parse_u32(f[2]), gid = parse_u32(f[3]);
    if (e.domain.empty() || !uid || !gid || f[4].empty()) {
      out.problems.push_back({n, "entry for " + shown(e.name) +
                                     " has an empty domain or directory, or a uid/gid that is not a number; skipped"});
      continue;
    }
    e.uid = *uid;
    e.gid = *gid;
    e.dir = std::string(f[4]);
    e.line = n;
    out.entries.push_back(std::move(e));
  }
  if (!out.terminated)
    out.problems.push_back(
        {lines.size() + 1, "the file does not end with a \".\" line (qmail-newu refuses such a file)"});
  return out;
}

// --- vpasswd ------------------------------------------------------------------------------------

std::optional<Quota> parse_quota(std::string_view text) {
  if (text.empty() || to_lower_ascii(text) == "noquota") return Quota{};
  if (text.find(',') != std::string_view::npos || text.back() == 'S' || text.back() == 'C') {
    Quota q;
    bool seen_s = false, seen_c = false;
    for (std::string_view part : split_fields(text, ',')) {
      if (part.size() < 2) return std::nullopt;
      char unit = part.back();
      auto v = parse_u64(part.substr(0, part.size() - 1));
      if (!v) return std::nullopt;
      if (unit == 'S' && !seen_s) {
        q.bytes = *v;
        seen_s = true;
      } else if (unit == 'C' && !seen_c) {
        q.messages = *v;
        seen_c = true;
      } else {
        return std::nullopt;
      }
    }
    return q;
  }
  // vpopmail's older forms, as its format_maildirquota() reads them.
  uint64_t factor = 1;
  char last = text.back();
  if (last == 'k' || last == 'K') factor = 1024;
  if (last == 'm' || last == 'M') factor = 1024 * 1024;
  auto v = parse_u64(factor == 1 ? text : text.substr(0, text.size() - 1));
  uint64_t bytes = 0;
  if (!v || __builtin_mul_overflow(*v, factor, &bytes)) return std::nullopt;
  return Quota{bytes, 0};
}

VpasswdFile parse_vpasswd(std::string_view text) {
  VpasswdFile out;
  auto lines = split_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    size_t n = i + 1;
    std::string_view line = lines[i];
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    auto f = split_fields(line, ':');
    if (f.size() < 7) {
      out.problems.push_back(
          {n, "has " + std::to_string(f.size()) + " fields; expected name:hash:uid:gid:gecos:dir:quota ; skipped"});
      continue;
    }
    VpasswdEntry e;
    e.line = n;
    e.name = to_lower_ascii(f[0]);
    if (e.name.empty()) {
      out.problems.push_back({n, "the user name is empty; skipped"});
      continue;
    }
    auto uid = parse_u32(f[2]), flags = parse_u32(f[3]);
    if (!uid || !flags) {
      out.problems.push_back({n, "user " + shown(e.name) + ": uid or gid (flags) field is not a number; skipped"});
      continue;
    }
    e.hash = std::string(f[1]);
    e.uid = *uid;
    e.flags = *flags;
    e.gecos = std::string(f[4]);
    e.dir = std::string(f[5]);
    e.quota_text = std::string(f[6]);
    if (auto q = parse_quota(f[6])) {
      e.quota = *q;
    } else {
      out.problems.push_back({n, "user " + shown(e.name) + ": quota " + shown(f[6]) +
                                     " is not NOQUOTA, <bytes>S[,<count>C] or <number>[K|M]; taken as no quota"});
    }
    for (size_t k = 7; k < f.size(); ++k)
      if (!f[k].empty()) e.has_clear_password = true;
    out.users.push_back(std::move(e));
  }
  return out;
}

FlagMapping map_flags(uint32_t flags) {
  FlagMapping m;
  if (flags & flag_no_pop) m.services &= ~uint32_t{service_pop3};
  if (flags & flag_no_imap) m.services &= ~uint32_t{service_imap};
  if (flags & flag_no_webmail) m.services &= ~uint32_t{service_web};
  if (flags & (flag_no_relay | flag_no_smtp)) m.services &= ~uint32_t{service_smtp};
  if (flags & flag_bounce_mail) m.enabled = false;
  static const std::pair<uint32_t, const char*> unmapped[] = {
      {flag_no_passwd_change, "NO_PASSWD_CHNG: tern has no per-user lock on password changes"},
      {flag_no_dialup, "NO_DIALUP: tern has no dial-up access to restrict"},
      {flag_user0, "V_USER0: a site-defined flag; tern has no equivalent"},
      {flag_user1, "V_USER1: a site-defined flag; tern has no equivalent"},
      {flag_user2, "V_USER2: a site-defined flag; tern has no equivalent"},
      {flag_user3, "V_USER3: a site-defined flag; tern has no equivalent"},
      {flag_qa_admin, "QA_ADMIN (qmailadmin domain administrator): tern has no per-domain administrators"},
      {flag_override, "V_OVERRIDE (exempt from vlimits): tern has no per-user exemption from domain limits"},
      {flag_no_spamassassin, "NO_SPAMASSASSIN: spam filtering is configured in tern's filters, not per user"},
      {flag_delete_spam, "DELETE_SPAM: spam filtering is configured in tern's filters, not per user"},
      {flag_sa_admin, "SA_ADMIN: spam filtering is configured in tern's filters, not per user"},
      {flag_sa_expert, "SA_EXPERT: spam filtering is configured in tern's filters, not per user"},
      {flag_no_maildrop, "NO_MAILDROP: tern runs no maildrop filters"},
  };
  uint32_t known = flag_no_pop | flag_no_imap | flag_no_webmail | flag_no_relay | flag_no_smtp | flag_bounce_mail;
  for (auto [bit, text] : unmapped) {
    known |= bit;
    if (flags & bit) m.unmapped.push_back("flag " + hex_flag(bit) + " " + text);
  }
  if (flags & ~known) m.unmapped.push_back("flag bits " + hex_flag(flags & ~known) + ": unknown to vpopmail and tern");
  return m;
}

// --- .qmail files -------------------------------------------------------------------------------

namespace {

// Words of a command line as /bin/sh splits plain words, '...' and "..." (with \ escapes).
std::vector<std::string> shell_words(std::string_view s) {
  std::vector<std::string> words;
  size_t i = 0;
  while (true) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    if (i >= s.size()) return words;
    std::string word;
    while (i < s.size() && s[i] != ' ' && s[i] != '\t') {
      char c = s[i++];
      if (c == '\'') {
        while (i < s.size() && s[i] != '\'') word += s[i++];
        ++i;
      } else if (c == '"') {
        while (i < s.size() && s[i] != '"') {
          if (s[i] == '\\' && i + 1 < s.size() && std::string_view("\"\\$`").find(s[i + 1]) != std::string_view::npos)
            ++i;
          word += s[i++];
        }
        ++i;
      } else if (c == '\\' && i < s.size()) {
        word += s[i++];
      } else {
        word += c;
      }
    }
    words.push_back(std::move(word));
  }
}

}  // namespace

std::optional<Vdelivermail> parse_vdelivermail(std::string_view command) {
  auto words = shell_words(command);
  if (words.empty()) return std::nullopt;
  std::string_view program = words[0];
  size_t slash = program.rfind('/');
  if (slash != std::string_view::npos) program.remove_prefix(slash + 1);
  if (program != "vdelivermail") return std::nullopt;
  Vdelivermail v;
  if (words.size() < 3) return v;  // missing
  v.argument = words[2];
  if (v.argument.empty())
    v.action = Vdelivermail::Action::missing;
  else if (v.argument == "bounce-no-mailbox")
    v.action = Vdelivermail::Action::bounce;
  else if (v.argument == "delete")
    v.action = Vdelivermail::Action::remove;
  else if (v.argument.front() == '/')
    v.action = Vdelivermail::Action::path;
  else if (v.argument.find('@') != std::string::npos)
    v.action = Vdelivermail::Action::address;
  else
    v.action = Vdelivermail::Action::other;
  return v;
}

DotQmail parse_dot_qmail(std::string_view text) {
  DotQmail out;
  auto lines = split_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    size_t n = i + 1;
    std::string_view line = strip_trailing_blanks(lines[i]);
    if (line.empty()) {
      if (i == 0)
        out.problems.push_back({n, "the first line is blank; qmail-local refuses the whole file (temporary failure)"});
      continue;
    }
    Delivery d;
    d.line = n;
    switch (line.front()) {
      case '#':
        continue;
      case '|':
        d.kind = Delivery::Kind::program;
        d.target = std::string(strip_blanks(line.substr(1)));
        if (d.target.empty()) {
          out.problems.push_back({n, "a '|' line without a command"});
          continue;
        }
        d.vdelivermail = parse_vdelivermail(d.target);
        break;
      case '.':
      case '/':
        d.kind = line.back() == '/' ? Delivery::Kind::maildir : Delivery::Kind::mbox;
        d.target = std::string(line);
        break;
      default:
        d.kind = Delivery::Kind::forward;
        line = strip_blanks(line);
        d.target = std::string(strip_blanks(line.front() == '&' ? line.substr(1) : line));
        if (d.target.empty()) {
          out.problems.push_back({n, "a '&' line without an address"});
          continue;
        }
    }
    out.deliveries.push_back(std::move(d));
  }
  return out;
}

std::optional<DotQmailName> parse_dot_qmail_name(std::string_view filename) {
  constexpr std::string_view prefix = ".qmail-";
  if (!filename.starts_with(prefix)) return std::nullopt;
  std::string_view ext = filename.substr(prefix.size());
  DotQmailName n;
  if (ext.empty()) {
    n.unusable = "it has no extension, so it names no local part";
    return n;
  }
  for (char c : ext) {
    if (c >= 'A' && c <= 'Z') {
      n.unusable = "its name has upper-case letters; qmail lowercases the address before it looks for the file";
      break;
    }
    if (c == '.') {
      n.unusable = "its name has a '.'; qmail looks for ':' in its place";
      break;
    }
  }
  constexpr std::string_view wildcard = "default";
  if (ext == wildcard) {
    n.kind = DotQmailName::Kind::catchall;
    return n;
  }
  if (ext.size() > wildcard.size() + 1 && ext.ends_with(wildcard) && ext[ext.size() - wildcard.size() - 1] == '-') {
    n.kind = DotQmailName::Kind::wildcard;
    ext.remove_suffix(wildcard.size());
  }
  n.local.assign(ext);
  std::replace(n.local.begin(), n.local.end(), ':', '.');
  return n;
}

}  // namespace vpopmail

// --- the importer ---------------------------------------------------------------------------------

namespace {

namespace fs = std::filesystem;
using namespace vpopmail;

constexpr uintmax_t max_vpasswd_bytes = uintmax_t{256} << 20;
constexpr uintmax_t max_small_file_bytes = uintmax_t{1} << 20;
constexpr int max_hash_depth = 3;  // vpopmail's hashed directories: up to 3 levels

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    if (len == 2 && c < 0xc2) return false;  // overlong
    i += len;
  }
  return true;
}

std::string latin1_to_utf8(std::string_view s) {
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x80) {
      out += ch;
    } else {
      out += static_cast<char>(0xc0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3f));
    }
  }
  return out;
}

// An address as tern stores targets: local part as written, domain lowercased.
std::string normal_address(std::string_view address) {
  auto parts = split_address(address);
  if (!parts) return std::string(address);
  return parts->first + "@" + to_lower_ascii(parts->second);
}

std::string join(const std::vector<std::string>& v, std::string_view sep = ", ") {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : std::string(sep)) + s;
  return out;
}

void add_unique(std::vector<std::string>& v, std::string s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(std::move(s));
}

// "path/with/trailing/" and "path/with/trailing" alike, lexically normal.
fs::path normal_path(const fs::path& p) {
  fs::path n = p.lexically_normal();
  if (!n.has_filename() && n.has_relative_path()) n = n.parent_path();
  return n;
}

bool under(const fs::path& path, const fs::path& root) {
  fs::path rel = path.lexically_relative(root);
  return !rel.empty() && *rel.begin() != "..";
}

// What a program line in a .qmail file is, for the report.
std::string describe_program(const std::string& command) {
  if (command.find("ezmlm") != std::string::npos)
    return "an ezmlm mailing list program (" + shown(command) + "); tern does not import mailing lists yet";
  if (command.find("autorespond") != std::string::npos)
    return "an autoresponder (" + shown(command) + "); tern does not import vacation messages yet";
  if (command.find("maildrop") != std::string::npos || command.find("procmail") != std::string::npos)
    return "a mail filter (" + shown(command) + "); tern runs no maildrop or procmail filters";
  if (command.find("spamc") != std::string::npos || command.find("spamassassin") != std::string::npos)
    return "a spam filter (" + shown(command) + "); configure spam filtering in tern's filters instead";
  return "the program " + shown(command) + "; tern runs no programs from .qmail files";
}

struct PlannedAlias {
  std::string local;
  std::vector<std::string> targets;
};

struct PlannedUser {
  User user;
  fs::path dir;  // "" when vpopmail has not made it yet
};

struct PlannedDomain {
  std::string name;
  fs::path dir;
  std::vector<std::string> alias_domains;
  std::vector<PlannedUser> users;
  std::vector<PlannedAlias> aliases;
  std::string catchall;
  bool added = false;  // added (or, dry run, to be added) by this run
};

class Importer {
 public:
  Importer(const fs::path& dir, Store& store, const ImportOptions& options)
      : store_(store), options_(options), root_(normal_path(fs::absolute(dir))) {
    report_.dry_run = options.dry_run;
  }

  ImportReport run() {
    std::error_code ec;
    if (!fs::is_directory(root_, ec))
      throw ImportError(root_.string() +
                        " is not a directory; give the vpopmail home, the directory that holds users/assign and "
                        "domains/ (often /home/vpopmail)");
    add_root(root_);
    add_root(root_ / "domains");
    fs::path assign = root_ / "users" / "assign";
    if (fs::symlink_status(assign, ec).type() != fs::file_type::not_found) {
      discover_from_assign(assign);
    } else if (fs::is_directory(root_ / "domains", ec)) {
      note("no users/assign in " + root_.string() + "; domains found by listing " + (root_ / "domains").string());
      discover_from_domains_dir();
    } else {
      throw ImportError("neither " + assign.string() + " nor " + (root_ / "domains").string() +
                        " exists; give the vpopmail home (often /home/vpopmail)");
    }
    for (auto& [name, d] : domains_) scan_users(d);
    for (auto& [name, d] : domains_) scan_user_dot_qmail(d);
    for (auto& [name, d] : domains_) scan_domain_dot_qmail(d);
    for (auto& [name, d] : domains_) apply(d);
    report_.counts.not_mapped = report_.not_mapped.size();
    return std::move(report_);
  }

 private:
  // --- reporting -------------------------------------------------------------------------------
  std::string verb(std::string_view past, std::string_view would) const {
    return std::string(options_.dry_run ? would : past);
  }
  void done(std::string line) { report_.done.push_back(std::move(line)); }
  void unchanged(std::string line) {
    report_.unchanged.push_back(std::move(line));
    ++report_.counts.unchanged;
  }
  void not_mapped(std::string line) { report_.not_mapped.push_back(std::move(line)); }
  void left_unchanged(std::string line) {
    not_mapped(std::move(line));
    ++report_.counts.left_unchanged;
  }
  void note(std::string line) { report_.notes.push_back(std::move(line)); }

  // --- paths -----------------------------------------------------------------------------------
  void add_root(const fs::path& p) {
    std::error_code ec;
    fs::path c = fs::canonical(p, ec);
    if (!ec) roots_.push_back(c);
  }

  bool inside_tree(const fs::path& canonical) const {
    return std::any_of(roots_.begin(), roots_.end(), [&](const fs::path& r) { return under(canonical, r); });
  }

  // The vpopmail home the files were written under, learnt from the first recorded path with a
  // /domains/ component; when that is not where the tree is now, recorded paths are rebased.
  void learn_home(std::string_view recorded) {
    if (home_learnt_) return;
    size_t at = recorded.find("/domains/");
    if (recorded.empty() || recorded.front() != '/' || at == std::string_view::npos) return;
    home_learnt_ = true;
    fs::path home = normal_path(fs::path(recorded.substr(0, at == 0 ? 1 : at)));
    std::error_code ec;
    fs::path where = fs::weakly_canonical(fs::path(recorded), ec);
    if (home == root_ || (!ec && inside_tree(where))) return;
    recorded_home_ = home;
    note("paths recorded under " + home.string() + " are read under " + root_.string() +
         " (the tree was copied or moved); imported Maildirs are used there");
  }

  // A path from users/assign, vpasswd or a .qmail file as the importer may use it; nullopt
  // (with `why`) when it is not absolute or leads out of the tree.
  std::optional<fs::path> tree_path(std::string_view recorded, std::string& why) {
    if (recorded.empty() || recorded.front() != '/') {
      why = "it is not an absolute path";
      return std::nullopt;
    }
    for (char c : recorded)
      if (is_control(c)) {
        why = "it contains a control character";
        return std::nullopt;
      }
    learn_home(recorded);
    fs::path p = normal_path(fs::path(recorded));
    if (!recorded_home_.empty() && under(p, recorded_home_))
      p = normal_path(root_ / p.lexically_relative(recorded_home_));
    std::error_code ec;
    fs::path c = fs::weakly_canonical(p, ec);
    if (ec) {
      why = ec.message();
      return std::nullopt;
    }
    if (!inside_tree(c)) {
      why = "it leads out of the vpopmail tree " + root_.string() + " (to " + c.string() + ")";
      return std::nullopt;
    }
    return p;
  }

  // The key under which a user directory or Maildir is found when a .qmail file names it.
  static std::string path_key(const fs::path& p) {
    std::error_code ec;
    fs::path c = fs::weakly_canonical(p, ec);
    return normal_path(ec ? p : c).string();
  }

  // Reads a regular file inside the tree (symlinks are resolved first, and must stay inside).
  std::optional<std::string> read_file(const fs::path& p, uintmax_t limit, std::string& why) {
    std::error_code ec;
    fs::path c = fs::canonical(p, ec);
    if (ec) {
      why = ec.message();
      return std::nullopt;
    }
    if (!inside_tree(c)) {
      why = "it is a symlink out of the vpopmail tree (to " + c.string() + ")";
      return std::nullopt;
    }
    // O_NOFOLLOW: a symlink swapped in after the check is refused, not followed.
    int fd = ::open(c.c_str(), O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      int e = errno;
      why = std::strerror(e);
      if (e == EACCES) why += "; run the import as root or as the vpopmail user";
      return std::nullopt;
    }
    struct stat st {};
    std::string data;
    bool ok = ::fstat(fd, &st) == 0;
    if (ok && !S_ISREG(st.st_mode)) {
      why = "it is not a regular file";
      ok = false;
    } else if (ok && static_cast<uintmax_t>(st.st_size) > limit) {
      why = "it is larger than " + std::to_string(limit) + " bytes";
      ok = false;
    }
    if (ok) {
      char buf[65536];
      while (true) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          why = std::strerror(errno);
          ok = false;
          break;
        }
        if (n == 0) break;
        data.append(buf, static_cast<size_t>(n));
        if (data.size() > limit) {
          why = "it is larger than " + std::to_string(limit) + " bytes";
          ok = false;
          break;
        }
      }
    }
    ::close(fd);
    if (!ok) return std::nullopt;
    return data;
  }

  bool exists_no_follow(const fs::path& p) {
    std::error_code ec;
    return fs::symlink_status(p, ec).type() != fs::file_type::not_found && !ec;
  }

  std::vector<fs::path> list_dir(const fs::path& dir, std::string& why) {
    std::vector<fs::path> out;
    std::error_code ec;
    fs::directory_iterator it(dir, ec), end;
    for (; !ec && it != end; it.increment(ec)) out.push_back(it->path());
    if (ec) why = ec.message();
    std::sort(out.begin(), out.end());
    return out;
  }

  // --- discovery -------------------------------------------------------------------------------
  PlannedDomain* add_planned_domain(const std::string& name, const fs::path& dir, const std::string& origin) {
    if (auto e = check_domain_name(name)) {
      not_mapped(origin + ": " + *e + "; not imported");
      return nullptr;
    }
    if (domains_.count(name)) {
      not_mapped(origin + ": domain " + name + " is listed twice; the second entry is ignored");
      return nullptr;
    }
    PlannedDomain& d = domains_[name];
    d.name = name;
    d.dir = dir;
    return &d;
  }

  void discover_from_assign(const fs::path& assign) {
    std::string why;
    auto text = read_file(assign, max_small_file_bytes * 64, why);
    if (!text) throw ImportError("cannot read " + assign.string() + ": " + why);
    AssignFile file = parse_assign(*text);
    for (const auto& p : file.problems) not_mapped("users/assign line " + std::to_string(p.line) + ": " + p.message);
    std::set<std::string> listed;
    for (const auto& e : file.entries) {
      if (e.is_alias()) continue;
      std::string origin = "users/assign line " + std::to_string(e.line);
      listed.insert(e.name);
      auto dir = tree_path(e.dir, why);
      if (!dir) {
        not_mapped(origin + ": domain " + shown(e.name) + ": directory " + shown(e.dir) + " is refused: " + why +
                   "; not imported");
        continue;
      }
      std::error_code ec;
      if (!fs::is_directory(*dir, ec)) {
        not_mapped(origin + ": domain " + shown(e.name) + ": directory " + dir->string() +
                   " does not exist; not imported (remove the stale line from users/assign)");
        continue;
      }
      add_planned_domain(e.name, *dir, origin);
    }
    for (const auto& e : file.entries) {
      if (!e.is_alias()) continue;
      std::string origin = "users/assign line " + std::to_string(e.line);
      listed.insert(e.name);
      if (auto err = check_domain_name(e.name)) {
        not_mapped(origin + ": alias domain: " + *err + "; not imported");
        continue;
      }
      auto it = domains_.find(e.domain);
      if (it == domains_.end()) {
        not_mapped(origin + ": alias domain " + e.name + " points to " + shown(e.domain) +
                   ", which is not an imported domain; not imported");
        continue;
      }
      if (domains_.count(e.name)) {
        not_mapped(origin + ": " + e.name + " is listed both as a domain and as an alias of " + e.domain +
                   "; the alias is not imported");
        continue;
      }
      add_unique(it->second.alias_domains, e.name);
    }
    // Domain directories qmail does not deliver to (no users/assign line).
    std::vector<fs::path> entries = list_dir(root_ / "domains", why);
    for (const auto& p : entries) {
      std::string name = p.filename().string();
      std::error_code ec;
      if (name.find('.') == std::string::npos || name.front() == '.' || listed.count(to_lower_ascii(name))) continue;
      if (fs::is_regular_file(p / "vpasswd", ec))
        not_mapped("domains/" + printable(name) +
                   " has a vpasswd but no users/assign line, so qmail does not deliver to it; "
                   "not imported (add it to users/assign first if it is live)");
    }
  }

  void discover_from_domains_dir() {
    struct Found {
      std::string name;
      fs::path path;
      fs::path canonical;
      bool symlink;
      bool has_vpasswd;
    };
    std::vector<Found> found;
    // Breadth-first over the hashed subdirectories (one-character names, up to 3 levels).
    std::vector<std::pair<fs::path, int>> todo{{root_ / "domains", 0}};
    while (!todo.empty()) {
      auto [dir, depth] = todo.back();
      todo.pop_back();
      std::string why;
      auto entries = list_dir(dir, why);
      if (!why.empty()) not_mapped("cannot list " + dir.string() + ": " + why);
      for (const auto& p : entries) {
        std::string name = p.filename().string();
        std::error_code ec;
        if (name.empty() || name.front() == '.' || !fs::is_directory(p, ec)) continue;
        bool symlink = fs::is_symlink(p, ec);
        fs::path c = fs::canonical(p, ec);
        if (ec) continue;
        if (!inside_tree(c)) {
          not_mapped("domains: " + shown(name) + " is a symlink out of the vpopmail tree (to " + c.string() +
                     "); not imported");
          continue;
        }
        if (name.find('.') == std::string::npos) {
          if (name.size() == 1 && depth < max_hash_depth && !symlink) todo.push_back({p, depth + 1});
          continue;
        }
        found.push_back({to_lower_ascii(name), p, c, symlink, fs::is_regular_file(p / "vpasswd", ec)});
      }
    }
    std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.name < b.name; });
    std::map<std::string, std::string> by_canonical;  // canonical dir -> domain
    for (const auto& f : found)
      if (!f.symlink && f.has_vpasswd) {
        std::string origin = "domains: " + printable(f.path.lexically_relative(root_ / "domains").string());
        if (add_planned_domain(f.name, f.path, origin)) by_canonical.emplace(f.canonical.string(), f.name);
      }
    for (const auto& f : found) {
      if (!f.symlink && f.has_vpasswd) continue;
      std::string origin = "domains: " + printable(f.path.lexically_relative(root_ / "domains").string());
      auto it = by_canonical.find(f.canonical.string());
      if (f.symlink && it != by_canonical.end()) {
        if (auto e = check_domain_name(f.name)) {
          not_mapped(origin + ": alias domain: " + *e + "; not imported");
        } else if (!domains_.count(f.name)) {
          add_unique(domains_[it->second].alias_domains, f.name);
        }
      } else if (f.symlink && f.has_vpasswd) {
        if (auto* d = add_planned_domain(f.name, f.path, origin)) by_canonical.emplace(f.canonical.string(), d->name);
      } else {
        not_mapped(origin + " has no vpasswd, so it is not a vpopmail domain; not imported");
      }
    }
  }

  // --- users -----------------------------------------------------------------------------------
  void scan_users(PlannedDomain& d) {
    std::string why;
    fs::path vpasswd = d.dir / "vpasswd";
    auto text = read_file(vpasswd, max_vpasswd_bytes, why);
    if (!text) {
      std::error_code ec;
      if (fs::exists(d.dir / "vpasswd.cdb", ec) && !exists_no_follow(vpasswd))
        why = "there is only vpasswd.cdb; rebuild the text file with vpopmail's vconvert or vmkpasswd";
      not_mapped("domain " + d.name + ": cannot read " + vpasswd.string() + ": " + why +
                 "; its users are not imported");
      return;
    }
    VpasswdFile file = parse_vpasswd(*text);
    std::string origin = "domain " + d.name + ": vpasswd line ";
    for (const auto& p : file.problems) not_mapped(origin + std::to_string(p.line) + ": " + p.message);
    size_t clear = 0;
    std::set<std::string> seen;
    for (const auto& e : file.users) {
      std::string at = origin + std::to_string(e.line) + ": ";
      if (auto err = check_local_part(e.name)) {
        not_mapped(at + *err + "; not imported");
        continue;
      }
      std::string address = e.name + "@" + d.name;
      if (!seen.insert(e.name).second) {
        not_mapped(at + "user " + address + " is listed twice; the second entry is ignored");
        continue;
      }
      PlannedUser pu;
      User& u = pu.user;
      u.domain = d.name;
      u.local = e.name;
      u.password_hash = e.hash;
      u.quota_bytes = e.quota.bytes;
      u.quota_messages = e.quota.messages;
      FlagMapping flags = map_flags(e.flags);
      u.services = flags.services;
      u.enabled = flags.enabled;
      for (const auto& f : flags.unmapped) not_mapped("user " + address + ": " + f + "; not imported");
      if (e.flags & flag_bounce_mail)
        note("user " + address + " has BOUNCE_MAIL: imported disabled (tern refuses its mail and its logins)");
      u.display_name = e.gecos;
      if (!valid_utf8(u.display_name)) {
        u.display_name = latin1_to_utf8(u.display_name);
        note("user " + address + ": the name in vpopmail's gecos field is not UTF-8; read as Latin-1");
      }
      if (e.hash.empty() || e.hash.front() == '!' || e.hash.front() == '*')
        not_mapped("user " + address +
                   " has no usable password hash in vpasswd; imported, but it cannot log in "
                   "until a password is set");
      if (e.has_clear_password) ++clear;
      if (e.dir.empty()) {
        note("user " + address +
             " has no directory yet (vpopmail makes it at the first delivery); tern uses its "
             "default Maildir");
      } else {
        auto dir = tree_path(e.dir, why);
        if (!dir) {
          not_mapped("user " + address + ": directory " + shown(e.dir) + " is refused: " + why + "; not imported");
          continue;
        }
        fs::path maildir = *dir / "Maildir";
        std::error_code ec;
        fs::path c = fs::weakly_canonical(maildir, ec);
        if (ec || !inside_tree(c)) {
          not_mapped("user " + address + ": " + maildir.string() + " leads out of the vpopmail tree" +
                     (ec ? "" : " (to " + c.string() + ")") + "; not imported");
          continue;
        }
        if (!fs::is_directory(maildir, ec))
          note("user " + address + ": " + maildir.string() +
               " does not exist yet; tern creates it at the first "
               "delivery");
        pu.dir = *dir;
        u.maildir = maildir.string();
        owners_[path_key(*dir)] = address;
        owners_[path_key(maildir)] = address;
      }
      d.users.push_back(std::move(pu));
    }
    if (clear > 0)
      note("domain " + d.name + ": vpasswd holds clear-text passwords for " + std::to_string(clear) +
           (clear == 1 ? " user" : " users") +
           "; tern keeps only the hashes. Delete the old vpasswd files once the "
           "migration is done");
  }

  // The user whose directory or Maildir `written` names (relative paths are taken from `base`).
  std::optional<std::string> owner_of(const std::string& written, const fs::path& base) {
    fs::path p = written.front() == '/' ? fs::path(written) : base / written;
    std::string why;
    auto local = tree_path(p.string(), why);
    if (!local) return std::nullopt;
    auto it = owners_.find(path_key(*local));
    if (it == owners_.end()) return std::nullopt;
    return it->second;
  }

  // Where the deliveries of a .qmail file lead, as addresses; `self` is the address the file is
  // for. Everything that is not an address or a known user's Maildir is reported. Returns the
  // addresses (self included when the file delivers to self's own Maildir).
  std::vector<std::string> targets_of(const DotQmail& q, const std::string& file, const fs::path& base,
                                      const std::string& self) {
    std::vector<std::string> out;
    for (const auto& p : q.problems) not_mapped(file + " line " + std::to_string(p.line) + ": " + p.message);
    for (const auto& d : q.deliveries) {
      std::string at = file + " line " + std::to_string(d.line) + ": ";
      auto add_address = [&](const std::string& written) {
        std::string a = normal_address(written);
        if (auto e = check_address(a)) {
          not_mapped(at + "forward to " + shown(written) + " is not imported: " + *e);
        } else if (a == self) {
          not_mapped(at + "forward to itself (" + a + ") is not imported; qmail would loop");
        } else {
          add_unique(out, a);
        }
      };
      auto add_path = [&](const std::string& written) {
        if (auto owner = owner_of(written, base))
          add_unique(out, *owner);
        else
          not_mapped(at + "delivery to " + shown(written) +
                     " is not imported: it is not the Maildir of an imported "
                     "user (tern delivers only to users' Maildirs)");
      };
      switch (d.kind) {
        case Delivery::Kind::forward:
          add_address(d.target);
          break;
        case Delivery::Kind::maildir:
          add_path(d.target);
          break;
        case Delivery::Kind::mbox:
          not_mapped(at + "delivery to the mbox file " + shown(d.target) +
                     " is not imported: tern delivers only to "
                     "Maildirs");
          break;
        case Delivery::Kind::program:
          if (d.vdelivermail && d.vdelivermail->action == Vdelivermail::Action::address)
            add_address(d.vdelivermail->argument);
          else if (d.vdelivermail && d.vdelivermail->action == Vdelivermail::Action::path)
            add_path(d.vdelivermail->argument);
          else
            not_mapped(at + describe_program(d.target) + "; not imported");
          break;
      }
    }
    return out;
  }

  void scan_user_dot_qmail(PlannedDomain& d) {
    for (auto& pu : d.users) {
      if (pu.dir.empty()) continue;
      User& u = pu.user;
      std::string address = u.address();
      std::string why;
      for (const auto& p : list_dir(pu.dir, why)) {
        std::string name = p.filename().string();
        if (name.starts_with(".qmail-"))
          not_mapped("user " + address + ": " + printable(p.string()) + " (mail to " + u.local +
                     "-EXT) is not imported: tern "
                     "has no per-user extension files");
      }
      fs::path file = pu.dir / ".qmail";
      if (!exists_no_follow(file)) continue;
      auto text = read_file(file, max_small_file_bytes, why);
      if (!text) {
        not_mapped("user " + address + ": cannot read " + file.string() + ": " + why +
                   "; its forwards are not "
                   "imported");
        continue;
      }
      DotQmail q = parse_dot_qmail(*text);
      std::vector<std::string> targets = targets_of(q, file.string(), pu.dir, address);
      apply_delivery(u, targets, q, file.string());
    }
  }

  // Sets forwards and keep_copy of `u` from where its .qmail file delivers.
  void apply_delivery(User& u, const std::vector<std::string>& targets, const DotQmail& q, const std::string& file) {
    std::string address = u.address();
    u.forwards.clear();
    u.keep_copy = false;
    for (const auto& t : targets) {
      if (t == address)
        u.keep_copy = true;
      else
        u.forwards.push_back(t);
    }
    if (u.forwards.empty()) u.keep_copy = false;
    if (!q.deliveries.empty() && targets.empty())
      not_mapped("user " + address + ": " + file + " delivers nowhere tern can follow; tern delivers " + address +
                 "'s mail to its mailbox instead");
  }

  // --- domain .qmail files ---------------------------------------------------------------------
  void scan_domain_dot_qmail(PlannedDomain& d) {
    std::string why;
    auto entries = list_dir(d.dir, why);
    if (!why.empty()) not_mapped("domain " + d.name + ": cannot list " + d.dir.string() + ": " + why);
    bool has_default = false;
    for (const auto& p : entries) {
      std::string filename = p.filename().string();
      auto name = parse_dot_qmail_name(filename);
      if (!name) continue;
      std::string file = d.name + "/" + printable(filename);
      if (!name->unusable.empty()) {
        note(file + " is never read by qmail (" + name->unusable + "); not imported");
        continue;
      }
      if (name->kind == DotQmailName::Kind::wildcard) {
        not_mapped(file + " (every " + name->local + "*@" + d.name +
                   ") is not imported: tern has no wildcard "
                   "aliases");
        continue;
      }
      auto text = read_file(p, max_small_file_bytes, why);
      if (!text) {
        not_mapped("cannot read " + printable(p.string()) + ": " + why + "; not imported");
        if (name->kind == DotQmailName::Kind::catchall) has_default = true;
        continue;
      }
      DotQmail q = parse_dot_qmail(*text);
      if (name->kind == DotQmailName::Kind::catchall) {
        has_default = true;
        scan_catchall(d, q, file);
      } else {
        scan_alias(d, name->local, q, file);
      }
    }
    if (!has_default)
      note("domain " + d.name +
           " has no .qmail-default, so qmail delivered to none of its users; they are imported "
           "and tern delivers to them");
  }

  void scan_alias(PlannedDomain& d, const std::string& local, const DotQmail& q, const std::string& file) {
    if (auto e = check_local_part(local)) {
      not_mapped(file + ": " + *e + "; not imported");
      return;
    }
    std::string address = local + "@" + d.name;
    std::vector<std::string> targets = targets_of(q, file, d.dir, address);
    auto user =
        std::find_if(d.users.begin(), d.users.end(), [&](const PlannedUser& u) { return u.user.local == local; });
    if (user != d.users.end()) {
      // qmail reads .qmail-NAME before .qmail-default runs vdelivermail: the file decides.
      apply_delivery(user->user, targets, q, file);
      note(file + " takes precedence over the mailbox of user " + address +
           " in qmail; imported as that user's "
           "forwards" +
           (user->dir.empty() ? "" : " (its own .qmail, if any, was never read)"));
      return;
    }
    if (targets.empty()) {
      not_mapped(file + ": " + (q.deliveries.empty() ? "has no delivery lines" : "nothing in it can be imported") +
                 "; alias " + address + " not imported");
      return;
    }
    d.aliases.push_back({local, targets});
  }

  void scan_catchall(PlannedDomain& d, const DotQmail& q, const std::string& file) {
    for (const auto& p : q.problems) not_mapped(file + " line " + std::to_string(p.line) + ": " + p.message);
    const Delivery* vdeliver = nullptr;
    for (const auto& del : q.deliveries) {
      std::string at = file + " line " + std::to_string(del.line) + ": ";
      if (del.vdelivermail && !vdeliver) {
        vdeliver = &del;
      } else if (del.vdelivermail) {
        not_mapped(at + "a second vdelivermail line is ignored");
      } else if (del.kind == Delivery::Kind::program) {
        not_mapped(at + "runs for all mail to " + d.name + ": " + describe_program(del.target) + "; not imported");
      } else {
        not_mapped(at + "delivers all mail to " + d.name + " to " + shown(del.target) + " as well; not imported");
      }
    }
    if (!vdeliver) {
      not_mapped(file + " does not run vdelivermail, so qmail delivered to none of " + d.name +
                 "'s users through it; no catch-all imported, and tern delivers to the users");
      return;
    }
    const Vdelivermail& v = *vdeliver->vdelivermail;
    std::string at = file + ": ";
    switch (v.action) {
      case Vdelivermail::Action::bounce:
        note("domain " + d.name + " has no catch-all (" + file +
             ": bounce-no-mailbox); tern refuses mail for its "
             "unknown addresses the same way");
        break;
      case Vdelivermail::Action::remove:
        not_mapped(at + "vdelivermail 'delete' silently discards mail for unknown addresses of " + d.name +
                   "; not imported: tern never discards mail silently and refuses such mail at SMTP time instead "
                   "(set a catch-all address if the mail should be kept)");
        break;
      case Vdelivermail::Action::address: {
        std::string a = normal_address(v.argument);
        if (auto e = check_address(a))
          not_mapped(at + "catch-all " + shown(v.argument) + " is not imported: " + *e);
        else
          d.catchall = a;
        break;
      }
      case Vdelivermail::Action::path:
        if (auto owner = owner_of(v.argument, d.dir))
          d.catchall = *owner;
        else
          not_mapped(at + "catch-all delivery to " + shown(v.argument) +
                     " is not imported: it is not the directory "
                     "or Maildir of an imported user");
        break;
      case Vdelivermail::Action::missing:
      case Vdelivermail::Action::other:
        not_mapped(at + "vdelivermail's second argument " + shown(v.argument) +
                   " is not bounce-no-mailbox, delete, "
                   "an address or a path; no catch-all imported");
        break;
    }
  }

  // --- writing ---------------------------------------------------------------------------------
  template <typename F>
  bool guarded(const std::string& what, F&& body) {
    try {
      body();
      return true;
    } catch (const StoreError& e) {
      if (e.temporary()) throw;
      not_mapped(what + ": " + e.what() + "; not imported");
      return false;
    }
  }

  void apply(PlannedDomain& d) {
    bool ok = false;
    guarded("domain " + d.name, [&] {
      if (store_.find_domain(d.name)) {
        unchanged("domain " + d.name + ": already present");
        ok = true;
      } else if (auto c = store_.canonical_domain(d.name)) {
        left_unchanged("domain " + d.name + " is an alias of " + *c +
                       " in tern; left unchanged, and its users and "
                       "aliases are not imported");
      } else {
        Domain dom;
        dom.name = d.name;
        if (!options_.dry_run) store_.add_domain(dom);
        done(verb("added", "would add") + " domain " + d.name);
        ++report_.counts.domains_added;
        d.added = ok = true;
      }
    });
    if (!ok) return;
    for (const auto& a : d.alias_domains) apply_domain_alias(a, d.name);
    for (const auto& u : d.users) apply_user(u.user);
    for (const auto& a : d.aliases) apply_alias(d, a);
    if (!d.catchall.empty()) apply_catchall(d);
  }

  void apply_domain_alias(const std::string& alias, const std::string& domain) {
    guarded("domain alias " + alias, [&] {
      auto c = store_.canonical_domain(alias);
      if (c && *c == domain) {
        unchanged("domain alias " + alias + " -> " + domain + ": already present");
      } else if (c) {
        left_unchanged("domain alias " + alias + " -> " + domain + ": " + alias + " already exists in tern" +
                       (*c == alias ? " as a domain" : " as an alias of " + *c) + "; left unchanged");
      } else {
        if (!options_.dry_run) store_.add_domain_alias(alias, domain);
        done(verb("added", "would add") + " domain alias " + alias + " -> " + domain);
        ++report_.counts.domain_aliases_added;
      }
    });
  }

  static std::string describe(const User& u) {
    std::vector<std::string> parts;
    if (u.quota_bytes == 0 && u.quota_messages == 0) parts.push_back("no quota");
    if (u.quota_bytes != 0) parts.push_back("quota " + std::to_string(u.quota_bytes) + " bytes");
    if (u.quota_messages != 0) parts.push_back("quota " + std::to_string(u.quota_messages) + " messages");
    if (u.services != all_services) parts.push_back("services " + services_text(u.services));
    if (!u.enabled) parts.push_back("disabled");
    if (!u.forwards.empty()) parts.push_back("forwards to " + join(u.forwards) + (u.keep_copy ? ", keeps a copy" : ""));
    return join(parts, "; ");
  }

  static std::vector<std::string> differences(const User& have, const User& want) {
    std::vector<std::string> out;
    if (have.password_hash != want.password_hash) out.push_back("password");
    if (have.quota_bytes != want.quota_bytes || have.quota_messages != want.quota_messages) out.push_back("quota");
    if (have.enabled != want.enabled) out.push_back("enabled state");
    if (have.services != want.services) out.push_back("services");
    if (have.forwards != want.forwards || have.keep_copy != want.keep_copy) out.push_back("forwards");
    if (have.display_name != want.display_name) out.push_back("display name");
    if (have.maildir != want.maildir) out.push_back("Maildir");
    return out;
  }

  void apply_user(const User& u) {
    std::string address = u.address();
    guarded("user " + address, [&] {
      if (auto have = store_.find_user(u.domain, u.local)) {
        auto diff = differences(*have, u);
        if (diff.empty())
          unchanged("user " + address + ": already imported, unchanged");
        else
          left_unchanged("user " + address + " exists in tern with a different " + join(diff) +
                         "; left unchanged (import never overwrites)");
      } else if (store_.find_alias(u.domain, u.local)) {
        left_unchanged("user " + address + ": " + address + " is an alias in tern; left unchanged, user not imported");
      } else {
        if (!options_.dry_run) store_.add_user(u);
        done(verb("added", "would add") + " user " + address + " (" + describe(u) + ")");
        ++report_.counts.users_added;
      }
    });
  }

  void apply_alias(const PlannedDomain& d, const PlannedAlias& a) {
    std::string address = a.local + "@" + d.name;
    guarded("alias " + address, [&] {
      if (store_.find_user(d.name, a.local)) {
        left_unchanged("alias " + address + ": a user of that name exists in tern; left unchanged");
        return;
      }
      std::vector<std::string> have;
      if (auto existing = store_.find_alias(d.name, a.local)) have = existing->targets;
      std::vector<std::string> extra, missing;
      for (const auto& t : have)
        if (std::find(a.targets.begin(), a.targets.end(), t) == a.targets.end()) extra.push_back(t);
      for (const auto& t : a.targets)
        if (std::find(have.begin(), have.end(), t) == have.end()) missing.push_back(t);
      if (!extra.empty()) {
        left_unchanged("alias " + address + " exists in tern with other targets (" + join(have) + "; vpopmail has " +
                       join(a.targets) + "); left unchanged");
        return;
      }
      if (missing.empty()) {
        unchanged("alias " + address + ": already imported, unchanged");
        return;
      }
      for (const auto& t : missing) {
        if (!options_.dry_run) store_.add_alias_target(d.name, a.local, t);
        ++report_.counts.alias_targets_added;
      }
      ++report_.counts.aliases_added;
      if (have.empty())
        done(verb("added", "would add") + " alias " + address + " -> " + join(missing));
      else
        done(verb("completed", "would complete") + " alias " + address + ": " + verb("added", "would add") + " " +
             join(missing));
    });
  }

  void apply_catchall(const PlannedDomain& d) {
    guarded("catch-all of " + d.name, [&] {
      Domain current;
      if (auto found = store_.find_domain(d.name))
        current = *found;
      else if (!(options_.dry_run && d.added))
        return;  // vanished meanwhile; nothing sensible to do
      if (current.catchall == d.catchall) {
        unchanged("domain " + d.name + ": catch-all " + d.catchall + " already set");
      } else if (!current.catchall.empty()) {
        left_unchanged("domain " + d.name + " has catch-all " + current.catchall + " in tern, vpopmail has " +
                       d.catchall + "; left unchanged");
      } else {
        current.name = d.name;
        current.catchall = d.catchall;
        if (!options_.dry_run) store_.update_domain(current);
        done(verb("set", "would set") + " catch-all of " + d.name + " to " + d.catchall);
        ++report_.counts.catchalls_set;
      }
    });
  }

  Store& store_;
  const ImportOptions& options_;
  fs::path root_;
  std::vector<fs::path> roots_;  // canonical directories the import may read
  bool home_learnt_ = false;
  fs::path recorded_home_;                        // set when recorded paths are rebased onto root_
  std::map<std::string, PlannedDomain> domains_;  // sorted by name
  std::map<std::string, std::string> owners_;     // user directory or Maildir (path_key) -> address
  ImportReport report_;
};

std::string json_string(std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  std::string text = valid_utf8(s) ? std::string(s) : latin1_to_utf8(s);
  std::string out = "\"";
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      out += "\\u00";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string json_list(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + json_string(v[i]);
  return out + "]";
}

std::string plural(uint64_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

}  // namespace

ImportReport import_vpopmail(const std::filesystem::path& vpopmail_dir, Store& store, const ImportOptions& options) {
  return Importer(vpopmail_dir, store, options).run();
}

std::string format_import_report(const ImportReport& r) {
  std::string out;
  auto section = [&](const char* title, const std::vector<std::string>& lines) {
    if (lines.empty()) return;
    out += title;
    out += "\n";
    for (const auto& l : lines) out += "  " + l + "\n";
  };
  if (r.dry_run) out += "Dry run: nothing was written.\n";
  section(r.dry_run ? "Would change:" : "Changed:", r.done);
  section("Not imported, or not fully:", r.not_mapped);
  section("Notes:", r.notes);
  const ImportCounts& c = r.counts;
  if (!r.changed() && c.unchanged == 0) {
    out += "Nothing was imported (" + plural(c.not_mapped, "item", "items") + " could not be; see above).\n";
    return out;
  }
  if (!r.changed()) {
    out += "Nothing to change: everything importable was already imported (" + plural(c.unchanged, "item", "items") +
           " unchanged, " + plural(c.not_mapped, "item", "items") + " not imported).\n";
    return out;
  }
  out += std::string(r.dry_run ? "Would add: " : "Added: ") + plural(c.domains_added, "domain", "domains") + ", " +
         plural(c.domain_aliases_added, "domain alias", "domain aliases") + ", " +
         plural(c.users_added, "user", "users") + ", " + plural(c.aliases_added, "alias", "aliases") + " (" +
         plural(c.alias_targets_added, "target", "targets") + "), " +
         plural(c.catchalls_set, "catch-all", "catch-alls") + "; " + std::to_string(c.unchanged) +
         " already imported; " + std::to_string(c.not_mapped) + " not imported (" + std::to_string(c.left_unchanged) +
         " present in tern with other data).\n";
  return out;
}

std::string import_report_json(const ImportReport& r) {
  const ImportCounts& c = r.counts;
  auto n = [](uint64_t v) { return std::to_string(v); };
  return std::string("{\"dry_run\":") + (r.dry_run ? "true" : "false") +
         ",\"changed\":" + (r.changed() ? "true" : "false") + ",\"done\":" + json_list(r.done) +
         ",\"unchanged\":" + json_list(r.unchanged) + ",\"not_mapped\":" + json_list(r.not_mapped) +
         ",\"notes\":" + json_list(r.notes) + ",\"counts\":{\"domains_added\":" + n(c.domains_added) +
         ",\"domain_aliases_added\":" + n(c.domain_aliases_added) + ",\"users_added\":" + n(c.users_added) +
         ",\"aliases_added\":" + n(c.aliases_added) + ",\"alias_targets_added\":" + n(c.alias_targets_added) +
         ",\"catchalls_set\":" + n(c.catchalls_set) + ",\"unchanged\":" + n(c.unchanged) +
         ",\"left_unchanged\":" + n(c.left_unchanged) + ",\"not_mapped\":" + n(c.not_mapped) + "}}";
}

}  // namespace tern::directory
