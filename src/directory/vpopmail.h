// Importing a vpopmail installation (`tern import vpopmail DIR`): its domains and domain aliases
// (users/assign), users (domains/DOMAIN/vpasswd), address aliases (domains/DOMAIN/.qmail-NAME),
// catch-alls (domains/DOMAIN/.qmail-default) and users' forwards (USERDIR/.qmail).
//
// The parsers in namespace vpopmail are pure: text in, typed values out, every malformed line
// reported as a LineProblem, never thrown. import_vpopmail() does the file I/O and the Store
// writes. File formats: ../shared/qmail-compat.md (vpopmail, dot-qmail), vpopmail's vauth.h
// (the flag bits), qmail-users(5) (users/assign) and dot-qmail(5).
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "directory/store.h"

namespace tern::directory {

namespace vpopmail {

struct LineProblem {
  size_t line = 0;  // 1-based
  std::string message;
  bool operator==(const LineProblem&) const = default;
};

// --- users/assign -------------------------------------------------------------------------------
// vadddomain writes `+example.com-:example.com:89:89:/home/vpopmail/domains/example.com:-::`;
// vaddaliasdomain writes the same line with the alias in field 1 and the real domain in field 2.
// The file ends with a line ".". Other qmail-users lines (`=user:...`, prefixes not ending in
// '-') are not vpopmail domains: they are reported as problems and skipped.

struct AssignEntry {
  std::string name;    // field 1 without '+' and the final '-', lowercased
  std::string domain;  // field 2, lowercased: the real domain (== name unless an alias domain)
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string dir;  // field 5: the real domain's directory, as written
  size_t line = 0;
  bool is_alias() const { return name != domain; }
  bool operator==(const AssignEntry&) const = default;
};

struct AssignFile {
  std::vector<AssignEntry> entries;
  std::vector<LineProblem> problems;
  bool terminated = false;  // a "." line was seen (lines after it are ignored, as qmail-newu does)
};

AssignFile parse_assign(std::string_view text);

// --- vpasswd ------------------------------------------------------------------------------------
// `name:hash:uid:gid:gecos:dir:quota[:clear]`; the gid field holds the flags below.

enum Flag : uint32_t {
  flag_no_passwd_change = 0x01,
  flag_no_pop = 0x02,
  flag_no_webmail = 0x04,
  flag_no_imap = 0x08,
  flag_bounce_mail = 0x10,
  flag_no_relay = 0x20,
  flag_no_dialup = 0x40,
  flag_user0 = 0x80,
  flag_user1 = 0x100,
  flag_user2 = 0x200,
  flag_user3 = 0x400,
  flag_no_smtp = 0x800,
  flag_qa_admin = 0x1000,
  flag_override = 0x2000,
  flag_no_spamassassin = 0x4000,
  flag_delete_spam = 0x8000,
  flag_sa_admin = 0x10000,
  flag_sa_expert = 0x20000,
  flag_no_maildrop = 0x40000,
};

struct Quota {
  uint64_t bytes = 0;  // 0: no limit
  uint64_t messages = 0;
  bool operator==(const Quota&) const = default;
};

// "NOQUOTA" or "" (no limit); Maildir++ "1000000S", "1000C", "5000000S,1000C" (either order);
// vpopmail's older forms "1000000" (bytes), "50M" / "50m" (MiB), "512K" / "512k" (KiB).
// nullopt for anything else, or a number past 64 bits.
std::optional<Quota> parse_quota(std::string_view text);

struct VpasswdEntry {
  std::string name;  // lowercased
  std::string hash;  // crypt(3) hash as written ($1$, $6$, DES, ...)
  uint32_t uid = 0;
  uint32_t flags = 0;  // the gid field
  std::string gecos;
  std::string dir;  // the user's directory as written ("" when vpopmail has not made it yet)
  std::string quota_text;
  Quota quota;
  bool has_clear_password = false;  // field 8 is set; the text is deliberately not kept
  size_t line = 0;
  bool operator==(const VpasswdEntry&) const = default;
};

struct VpasswdFile {
  std::vector<VpasswdEntry> users;
  std::vector<LineProblem> problems;
};

VpasswdFile parse_vpasswd(std::string_view text);

// What the flags mean in tern: services (model.h bits), enabled, and one line per flag tern has
// no equivalent for ("NO_DIALUP (0x40): ...").
struct FlagMapping {
  uint32_t services = all_services;
  bool enabled = true;
  std::vector<std::string> unmapped;
  bool operator==(const FlagMapping&) const = default;
};

FlagMapping map_flags(uint32_t flags);

// --- .qmail files -------------------------------------------------------------------------------

// `| /home/vpopmail/bin/vdelivermail '' ARG`: what vdelivermail does for an address that is not a
// user (in .qmail-default: the domain's catch-all).
struct Vdelivermail {
  enum class Action {
    bounce,   // bounce-no-mailbox
    remove,   // delete: mail is silently discarded
    address,  // an address: forward there
    path,     // a directory: a user's directory or Maildir, delivered to
    missing,  // no second argument
    other,    // anything else
  };
  Action action = Action::missing;
  std::string argument;
  bool operator==(const Vdelivermail&) const = default;
};

// `command` is a program line without its '|'. nullopt when it does not run vdelivermail.
// Arguments are split as /bin/sh would for plain words and '...' / "..." quoting.
std::optional<Vdelivermail> parse_vdelivermail(std::string_view command);

struct Delivery {
  enum class Kind {
    forward,  // `&address` or `address`: target is the address without '&'
    maildir,  // `./Maildir/`, `/path/Maildir/`: a line starting '.' or '/' and ending '/'
    mbox,     // a line starting '.' or '/' not ending '/'
    program,  // `|command`: target is the command, leading blanks removed
  };
  Kind kind = Kind::forward;
  std::string target;
  std::optional<Vdelivermail> vdelivermail;  // for programs that run vdelivermail
  size_t line = 0;
  bool operator==(const Delivery&) const = default;
};

struct DotQmail {
  std::vector<Delivery> deliveries;  // in file order; comments and blank lines dropped
  std::vector<LineProblem> problems;
};

// dot-qmail(5): trailing blanks are stripped; '#' starts a comment line; a blank first line makes
// qmail-local refuse the whole file (reported; the rest is still parsed).
DotQmail parse_dot_qmail(std::string_view text);

// A `.qmail-EXT` file name in a domain directory. In file names qmail writes '.' as ':' and
// lowercases: `.qmail-first:last` is first.last@, `.qmail-sales-default` is every sales-*@,
// `.qmail-default` is the catch-all. nullopt when `filename` is not `.qmail-` + something.
struct DotQmailName {
  enum class Kind { catchall, exact, wildcard };
  Kind kind = Kind::exact;
  std::string local;     // exact: the local part; wildcard: the prefix including its final '-'
  std::string unusable;  // non-empty: qmail never reads this file (why)
  bool operator==(const DotQmailName&) const = default;
};

std::optional<DotQmailName> parse_dot_qmail_name(std::string_view filename);

}  // namespace vpopmail

// --- the importer ---------------------------------------------------------------------------------

struct ImportOptions {
  bool dry_run = false;  // read everything, report what would change, write nothing
};

struct ImportCounts {
  uint64_t domains_added = 0;
  uint64_t domain_aliases_added = 0;
  uint64_t users_added = 0;
  uint64_t aliases_added = 0;  // aliases created or completed
  uint64_t alias_targets_added = 0;
  uint64_t catchalls_set = 0;
  uint64_t unchanged = 0;       // items already in tern exactly as vpopmail has them
  uint64_t left_unchanged = 0;  // items in tern with other data: not touched (also in not_mapped)
  uint64_t not_mapped = 0;      // == not_mapped.size()
  bool operator==(const ImportCounts&) const = default;
};

struct ImportReport {
  bool dry_run = false;
  std::vector<std::string> done;        // "added user bob@example.com (...)"; "would add ..." when dry_run
  std::vector<std::string> unchanged;   // "user bob@example.com: already imported, unchanged"
  std::vector<std::string> not_mapped;  // what was not imported or not fully, why, and what to do
  std::vector<std::string> notes;       // facts worth knowing that need no action
  ImportCounts counts;
  bool changed() const { return !done.empty(); }
};

// The tree cannot be read at all (not a directory, neither users/assign nor domains/).
class ImportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Imports the vpopmail home `vpopmail_dir` (holding users/assign and/or domains/; without
// users/assign every domains/DOMAIN/ with a vpasswd, hashed subdirectories included). Idempotent:
// what already exists is left alone (never overwritten: a user with other data, such as a changed
// password, is reported "exists, left unchanged"); a second run changes nothing and says so.
// Maildirs are used in place. Paths recorded under another vpopmail home (the tree was copied)
// are read under `vpopmail_dir`; paths that lead out of the tree (symlinks included) and names
// that are not valid domains or local parts are refused with a report line.
// Throws ImportError as above, and StoreError when the store fails temporarily (rerun later).
ImportReport import_vpopmail(const std::filesystem::path& vpopmail_dir, Store& store, const ImportOptions& options);

// The report for people: sections and a summary line ("nothing to change" on a rerun).
std::string format_import_report(const ImportReport& report);
// The report as one JSON object: {"dry_run":..,"changed":..,"done":[..],"unchanged":[..],
// "not_mapped":[..],"notes":[..],"counts":{..}}.
std::string import_report_json(const ImportReport& report);

}  // namespace tern::directory
