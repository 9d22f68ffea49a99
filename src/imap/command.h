// Pure IMAP command parser: one complete command from CommandReader in, a typed Command or the
// reason it is not one out. No I/O, no session state: whether a command is allowed in the
// current state, whether an extension is enabled, and what the arguments mean for a mailbox
// are the session's business.
//
// STANDARDS: RFC 9051 (IMAP4rev2) 9 and RFC 3501 (IMAP4rev1) 9 (formal syntax; RFC 3501's
// CHECK, LSUB, RECENT, NEW, OLD and RFC822.* are kept); RFC 4466 (ABNF extensions); RFC 2971
// (ID); RFC 3502 (MULTIAPPEND); RFC 3516 (BINARY, literal8); RFC 4731 and RFC 9051 6.4.4
// (ESEARCH RETURN); RFC 4959 (SASL-IR); RFC 5161 (ENABLE); RFC 5182 (SEARCHRES "$"); RFC 5258
// (LIST-EXTENDED); RFC 5819 (LIST-STATUS); RFC 6154 (SPECIAL-USE, CREATE USE); RFC 6851 (MOVE);
// RFC 6855 (UTF8=ACCEPT); RFC 7162 (CONDSTORE, QRESYNC); RFC 7889 (APPENDLIMIT); RFC 9208
// (QUOTA); RFC 3501 5.1.3 (modified UTF-7 mailbox names).
//
// DIAGNOSTICS: every refusal is a tagged BAD (untagged "*" when the tag is unreadable) whose
// text names the cause; client bytes in it are printable ASCII, at most 32 octets.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "imap/reader.h"

namespace tern::imap {

struct ParseOptions {
  bool utf8_accept = false;            // the client sent ENABLE UTF8=ACCEPT (RFC 6855)
  size_t max_sequence_ranges = 10000;  // ranges in one sequence set
  size_t max_depth = 32;               // nested parentheses (search keys, lists)
  size_t max_search_keys = 10000;      // keys in one search program, NOT / OR / groups included
  size_t max_list_items = 1000;        // fetch items, header fields, flags, patterns, capabilities
};

enum class Verb : uint8_t {
  capability,
  noop,
  logout,
  starttls,
  authenticate,
  login,
  enable,
  id,
  select,
  examine,
  create,
  delete_,
  rename,
  subscribe,
  unsubscribe,
  list,
  lsub,
  namespace_,
  status,
  append,
  idle,
  getquota,
  getquotaroot,
  setquota,
  check,
  close,
  unselect,
  expunge,
  search,
  fetch,
  store,
  copy,
  move,
};  // delete_ and namespace_: DELETE and NAMESPACE (C++ keywords)

// "*" in a sequence set: the largest number in use.
inline constexpr uint32_t sequence_star = 0;

struct SequenceRange {
  uint32_t first = 1;  // 1..4294967295 or sequence_star; "a:b" is kept as sent (b may be below a)
  uint32_t last = 1;   // equals first for a single number
};

struct SequenceSet {
  bool saved = false;  // "$": the result saved by SEARCH RETURN (SAVE) (RFC 5182); ranges empty
  std::vector<SequenceRange> ranges;
};

struct Date {
  uint16_t year = 0;  // 1..9999
  uint8_t month = 0;  // 1..12
  uint8_t day = 0;    // 1..31, valid for the month
};

// APPEND's date-time: "dd-Mon-yyyy hh:mm:ss +zzzz".
struct DateTime {
  Date date;
  uint8_t hour = 0, minute = 0, second = 0;  // second may be 60 (leap second)
  int16_t zone_minutes = 0;                  // east of UTC: "+0130" is 90, "-0800" is -480
  int64_t unix_seconds() const;              // the instant, in seconds since 1970-01-01 UTC
};

enum SystemFlag : uint8_t { flag_answered = 1, flag_flagged = 2, flag_deleted = 4, flag_seen = 8, flag_draft = 16 };

struct FlagList {
  uint8_t system = 0;                 // SystemFlag bits
  std::vector<std::string> keywords;  // atoms as sent (keywords compare case-insensitively)
};

// STATUS items, and LIST's RETURN (STATUS (...)).
enum StatusItem : uint16_t {
  status_messages = 1,
  status_uid_next = 2,
  status_uid_validity = 4,
  status_unseen = 8,
  status_deleted = 16,
  status_size = 32,
  status_recent = 64,           // RFC 3501 only
  status_highest_modseq = 128,  // RFC 7162
  status_append_limit = 256,    // RFC 7889
};

struct QresyncParams {  // SELECT/EXAMINE (QRESYNC (...)), RFC 7162 3.2.5
  uint32_t uid_validity = 0;
  uint64_t modseq = 0;
  SequenceSet known_uids;           // empty when not sent
  SequenceSet known_sequence_set;   // seq-match-data: message numbers ...
  SequenceSet known_sequence_uids;  // ... and their UIDs; both empty when not sent
};

struct SelectParams {
  bool condstore = false;
  std::optional<QresyncParams> qresync;
};

enum ListSelection : uint8_t {
  select_subscribed = 1,
  select_remote = 2,
  select_recursive_match = 4,
  select_special_use = 8
};
enum ListReturn : uint8_t { return_subscribed = 1, return_children = 2, return_special_use = 4, return_status = 8 };

struct ListArgs {                     // LIST and LSUB
  std::string reference;              // decoded like a mailbox name
  std::vector<std::string> patterns;  // decoded; "%" and "*" are wildcards; LSUB has one
  bool extended = false;              // LIST-EXTENDED syntax: selection options, a pattern list or RETURN
  uint8_t selection = 0;              // ListSelection bits
  uint8_t return_options = 0;         // ListReturn bits
  uint16_t status_items = 0;          // StatusItem bits of RETURN (STATUS (...))
};

// One message of APPEND (several with MULTIAPPEND). Its octets are
// CompleteCommand::text.substr(offset, size), not copied.
struct AppendMessage {
  FlagList flags;
  std::optional<DateTime> internal_date;
  size_t offset = 0;
  size_t size = 0;
  bool binary = false;  // sent as literal8 (RFC 3516): may hold NUL
};

enum class SearchKeyKind : uint8_t {
  and_,
  or_,
  not_,  // AND (a parenthesised list or the whole program), OR, NOT
  all,
  answered,
  bcc,
  before,
  body,
  cc,
  deleted,
  draft,
  flagged,
  from,
  header,
  keyword,
  larger,
  new_,
  old,
  on,
  recent,
  seen,
  sent_before,
  sent_on,
  sent_since,
  since,
  smaller,
  subject,
  text,
  to,
  uid,
  unanswered,
  undeleted,
  undraft,
  unflagged,
  unkeyword,
  unseen,
  sequence,
  modseq,
};

// A search program is a tree kept flat in prefix order: a key's operands follow it, and its
// `span` (itself and everything below) says where its next sibling starts. keys[0] is the
// implicit AND of the program's top-level keys.
struct SearchKey {
  SearchKeyKind kind = SearchKeyKind::all;
  uint32_t operands = 0;  // and_: at least one; or_: 2; not_: 1; others: 0
  uint32_t span = 1;
  std::string field;    // HEADER's field name; MODSEQ's entry name ("/flags/\\seen"), if any
  std::string value;    // the string of BCC BODY CC FROM HEADER SUBJECT TEXT TO; KEYWORD/UNKEYWORD's
                        // keyword; MODSEQ's entry type ("priv", "shared", "all")
  uint64_t number = 0;  // LARGER, SMALLER (octets), MODSEQ
  Date date;            // BEFORE ON SINCE SENTBEFORE SENTON SENTSINCE
  SequenceSet set;      // sequence, UID
};

enum SearchReturn : uint8_t { return_min = 1, return_max = 2, return_all = 4, return_count = 8, return_save = 16 };

struct SearchArgs {
  bool esearch = false;         // RETURN (...) was given: answer with ESEARCH (RFC 4731)
  uint8_t return_options = 0;   // SearchReturn bits; RETURN () means ALL
  std::string charset;          // upper-cased; empty when not given
  std::vector<SearchKey> keys;  // keys[0] is the root
};

enum class FetchAttribute : uint8_t {
  envelope,
  flags,
  internal_date,
  rfc822,
  rfc822_header,
  rfc822_size,
  rfc822_text,
  body,  // BODY without a section: the non-extensible BODYSTRUCTURE
  body_structure,
  uid,
  modseq,
  body_section,  // BODY[...] and BODY.PEEK[...]
  binary,        // BINARY[...] and BINARY.PEEK[...]
  binary_size,
};

enum class SectionText : uint8_t { none, header, header_fields, header_fields_not, text, mime };

struct Section {
  std::vector<uint32_t> part;  // "1.2.3"; empty for the whole message
  SectionText text = SectionText::none;
  std::vector<std::string> fields;  // HEADER.FIELDS (...) as sent
};

struct FetchItem {
  FetchAttribute attribute = FetchAttribute::flags;
  bool peek = false;     // BODY.PEEK, BINARY.PEEK: \Seen is not set
  Section section;       // body_section, binary, binary_size (part only)
  bool partial = false;  // "<origin.length>"
  uint64_t partial_origin = 0;
  uint64_t partial_length = 0;  // at least 1
};

struct FetchArgs {
  std::vector<FetchItem> items;           // macros ALL, FAST, FULL expanded
  std::optional<uint64_t> changed_since;  // CHANGEDSINCE (RFC 7162)
  bool vanished = false;                  // VANISHED (QRESYNC; UID FETCH with CHANGEDSINCE only)
};

enum class StoreMode : uint8_t { replace, add, remove };  // FLAGS, +FLAGS, -FLAGS

struct StoreArgs {
  StoreMode mode = StoreMode::replace;
  bool silent = false;
  FlagList flags;
  std::optional<uint64_t> unchanged_since;  // UNCHANGEDSINCE (RFC 7162)
};

struct QuotaLimit {
  std::string resource;  // upper-cased: STORAGE, MESSAGE, ...
  uint64_t limit = 0;
};

struct IdField {
  std::string name;
  std::optional<std::string> value;  // NIL: none
};

// The fields a verb does not use stay empty.
struct Command {
  std::string tag;
  Verb verb = Verb::noop;
  bool uid = false;         // UID COPY/MOVE/FETCH/SEARCH/STORE/EXPUNGE: the numbers are UIDs
  std::string mailbox;      // SELECT EXAMINE CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE STATUS APPEND COPY MOVE
                            // GETQUOTAROOT: UTF-8, "INBOX" in any case becomes "INBOX"
  std::string new_mailbox;  // RENAME
  std::string name;         // AUTHENTICATE's mechanism (upper-cased), LOGIN's user, GETQUOTA/SETQUOTA's root
  std::string password;     // LOGIN
  std::optional<std::string> initial_response;  // AUTHENTICATE (SASL-IR): base64 as sent, "=" = empty
  std::vector<std::string> capabilities;        // ENABLE, upper-cased
  SequenceSet sequence;                         // FETCH STORE COPY MOVE, UID EXPUNGE
  SelectParams select;                          // SELECT EXAMINE
  std::vector<std::string> special_use;         // CREATE (USE (...)): "\Drafts" ...
  ListArgs list;                                // LIST LSUB
  uint16_t status_items = 0;                    // STATUS: StatusItem bits
  std::vector<AppendMessage> messages;          // APPEND
  SearchArgs search;                            // SEARCH
  FetchArgs fetch;                              // FETCH
  StoreArgs store;                              // STORE
  std::vector<QuotaLimit> quota_limits;         // SETQUOTA
  std::optional<std::vector<IdField>> id;       // ID: nullopt for "ID NIL"
};

struct ParseError {
  std::string tag;    // the command's tag, or "*"
  std::string reply;  // the whole reply line, CRLF included: "<tag> BAD <cause>\r\n"
};

using ParseResult = std::variant<Command, ParseError>;

ParseResult parse_command(const CompleteCommand& command, const ParseOptions& options = {});

// Modified UTF-7 (RFC 3501 5.1.3) to UTF-8 and back. Both refuse what is not a mailbox name:
// decode refuses malformed or non-canonical input (bytes outside printable ASCII, "&" without
// "-", bad base64, nonzero padding bits, unpaired surrogates, printable ASCII or "&" in base64,
// two base64 runs in a row); encode refuses invalid UTF-8. Both refuse control characters
// (U+0000..U+001F, U+007F..U+009F), which no mailbox name holds. So for every s that decodes,
// encode(decode(s)) == s, and for every u that encodes, decode(encode(u)) == u.
std::optional<std::string> decode_mutf7(std::string_view mutf7);
std::optional<std::string> encode_mutf7(std::string_view utf8);

// Whether `bytes` is UTF-8 without overlongs, surrogates or code points over U+10FFFF.
bool valid_utf8(std::string_view bytes);

}  // namespace tern::imap
