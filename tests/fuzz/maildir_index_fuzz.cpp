// libFuzzer target: the mail store's parsers (Maildir names, dovecot-uidlist, courierimapuiddb,
// tern-index) must take any bytes without crashing, and what they accept must be self-consistent:
// renamed names keep their base name, accepted lists and indexes have ascending UIDs below the next
// UID, an index formats back to the same index, and merging an index with a listing of exactly its
// own messages keeps every UID. Links only tern_mailbox_parse.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "mailbox/index_format.h"
#include "mailbox/maildir_name.h"
#include "mailbox/structure_cache.h"
#include "mailbox/uidlist.h"

using namespace tern::mailbox;

namespace {

void check_uidlist(const Parsed<UidList>& list) {
  if (!list) {
    if (list.error.line == 0 || list.error.message.empty()) std::abort();
    return;
  }
  uint32_t last = 0;
  for (const auto& entry : list.value->entries) {
    if (entry.uid <= last || !valid_base_name(entry.base)) std::abort();
    last = entry.uid;
  }
  if (list.value->uidvalidity == 0 || list.value->next_uid <= last) std::abort();
  // Adoption of any accepted list gives an index that formats and parses back.
  IndexState adopted = merge_listing(state_from_uidlist(*list.value), {}, 1).state;
  if (!parse_index(format_index(adopted))) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  if (auto name = parse_maildir_name(text)) {
    if (!valid_base_name(name->base)) std::abort();
    std::string renamed = name_with_flags(*name, name->flags);
    auto again = parse_maildir_name(renamed);
    // The renamed name may pass 255 bytes (the letters are written once each and sorted, but
    // ":1," info becomes ":2,"); within the limit it must read back the same.
    if (renamed.size() <= 255) {
      if (!again || again->base != name->base || again->flags != name->flags || again->size != name->size) std::abort();
      if (name->info == '2' && again->extra != name->extra) std::abort();
    }
    if (parse_flag_letters(format_flag_letters(name->flags)) != name->flags) std::abort();
  }

  // tern-cache: every record found lies inside the bytes, in order, and ends in LF.
  for (bool header : {true, false}) {
    ParsedCache cache = parse_structure_cache(text, header, 5);
    if (cache.valid_end < 5 || cache.valid_end - 5 > text.size()) std::abort();
    uint64_t previous_end = 5;
    for (const CacheRecord& r : cache.records) {
      if (r.offset < previous_end || r.offset - 5 + r.length + 1 > text.size()) std::abort();
      if (text[r.offset - 5 + r.length] != '\n' || r.uid == 0) std::abort();
      // Written again, it reads back the same (the number may have had leading zeros).
      std::string record = format_cache_record(r.uid, r.kind, text.substr(r.offset - 5, r.length));
      ParsedCache again = parse_structure_cache(record, false);
      if (again.records.size() != 1 || again.records[0].uid != r.uid || again.valid_end != record.size()) std::abort();
      previous_end = r.offset + r.length + 1;
    }
  }

  check_uidlist(parse_dovecot_uidlist(text));
  check_uidlist(parse_courier_uiddb(text));

  auto index = parse_index(text);
  if (index) {
    const IndexState& state = *index.value;
    std::string formatted = format_index(state);
    auto reparsed = parse_index(formatted);
    if (!reparsed || reparsed.value->entries != state.entries || reparsed.value->next_uid != state.next_uid ||
        format_index(*reparsed.value) != formatted)
      std::abort();
    // A listing of the index's own messages (in cur/ with their flags) changes nothing.
    std::vector<ListedFile> files;
    for (const auto& entry : state.entries) {
      ListedFile file;
      MaildirName name;
      name.base = entry.base;
      file.file_name = name_with_flags(name, entry.flags);
      auto parsed = parse_maildir_name(file.file_name);
      if (!parsed) continue;  // base plus letters past 255 bytes: no such file can exist
      file.name = std::move(*parsed);
      file.size = entry.size;
      files.push_back(std::move(file));
    }
    size_t listed = files.size();
    MergeResult merged = merge_listing(state, std::move(files), state.uidvalidity + 1);
    if (!merged.added.empty() || !merged.changed.empty() || merged.renumbered) std::abort();
    if (merged.state.entries.size() != listed || merged.expunged.size() != state.entries.size() - listed) std::abort();
    // Listing new/ alone, empty, changes nothing either: every entry is in cur/. A file in new/
    // that is no entry's gets the next UID.
    IndexState only_new = merged.state;
    NewListingChanges changes;
    if (!merge_new_listing(only_new, {}, changes) || changes.modified() || only_new.entries != merged.state.entries)
      std::abort();
    ListedFile delivered;
    delivered.in_new = true;
    delivered.file_name = "1.fuzz-delivery.h";
    delivered.name = *parse_maildir_name(delivered.file_name);
    bool known = std::any_of(only_new.entries.begin(), only_new.entries.end(),
                             [](const IndexEntry& e) { return e.base == "1.fuzz-delivery.h"; });
    uint32_t next = only_new.next_uid;
    if (merge_new_listing(only_new, {delivered}, changes) &&
        (known ? changes.modified()
               : changes.added != std::vector<uint32_t>{next} ||
                     only_new.entries.back().location != "new/1.fuzz-delivery.h"))
      std::abort();
  } else if (index.error.line == 0 || index.error.message.empty()) {
    std::abort();
  }
  return 0;
}
