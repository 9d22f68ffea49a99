// One account's mailboxes as IMAP sees them, over its Maildir++ directory: INBOX is the Maildir
// itself, every other mailbox a ".Name" subdirectory (hierarchy separator ".", names in
// modified UTF-7 on disk, as Dovecot and Courier write them), subscriptions in Dovecot's
// "subscriptions" file, and new messages written the Maildir way (tmp/, then a rename).
// Messages of one folder, their UIDs and flags are src/mailbox's FolderIndex.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "mailbox/maildir_name.h"

namespace tern::imap {

inline constexpr char hierarchy_separator = '.';

struct FolderInfo {
  std::string name;         // UTF-8, "INBOX" or "Sent", "Lists.tern"
  std::string special_use;  // "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive" or ""
  bool has_children = false;
  bool selectable = true;  // false for a parent that exists only through its children
};

// "\\Sent" for "Sent" (and the names other servers use: "Sent Items", "Sent Messages"), ...
std::string special_use_of(std::string_view name);

// Why a mailbox name cannot be used, or "" when it can (the reply text after "NO ").
std::string name_problem(std::string_view name);

class Mailstore {
 public:
  explicit Mailstore(std::filesystem::path maildir);

  const std::filesystem::path& root() const { return root_; }
  // The directory of mailbox `name` ("INBOX" in any case is the Maildir); nullopt when
  // name_problem(name) is not empty.
  std::optional<std::filesystem::path> folder_path(std::string_view name) const;
  bool exists(std::string_view name) const;

  // INBOX's new/, cur/ and tmp/, and on first use the folders Sent, Drafts, Trash, Junk and
  // Archive (RFC 6154 SPECIAL-USE), noted in "tern-folders" so a folder the user deletes is not
  // made again.
  std::error_code prepare();

  // Every mailbox, INBOX first, the others sorted; parents that exist only through children
  // (".A.B" without ".A") are listed as not selectable.
  std::error_code list(std::vector<FolderInfo>& out) const;

  // errc::file_exists when it exists; errc::invalid_argument for a name name_problem refuses.
  std::error_code create(std::string_view name);
  // The folder and its messages; its children stay. errc::no_such_file_or_directory if absent.
  std::error_code remove(std::string_view name);
  // Renames the folder and its children. Renaming INBOX moves its messages into a new folder
  // (INBOX stays, empty). Nothing can be renamed to INBOX (errc::operation_not_supported).
  std::error_code rename(std::string_view from, std::string_view to);

  std::vector<std::string> subscriptions() const;
  std::error_code subscribe(std::string_view name, bool on);

  // Writes a message (its bytes as the client sent them; CRLF line ends are stored as LF) into
  // the folder at `folder` with `flags` and the mtime `internal_date`; `location` gets where it
  // is relative to the folder ("cur/<name>", as FolderIndex::add_files takes it).
  std::error_code add_message(const std::filesystem::path& folder, std::string_view bytes,
                              const mailbox::MaildirFlags& flags, int64_t internal_date, std::string& location);
  // A copy of the message file `source` in the folder at `folder` (a hard link when possible);
  // `location` as for add_message.
  std::error_code copy_message(const std::filesystem::path& source, const std::filesystem::path& folder,
                               const mailbox::MaildirFlags& flags, std::string& location);

 private:
  std::string unique_base(uint64_t size, uint64_t vsize);

  std::filesystem::path root_;
  uint64_t sequence_ = 0;
};

}  // namespace tern::imap
