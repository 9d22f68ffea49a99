#include "mailbox/index_format.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <set>
#include <unordered_set>

namespace tern::mailbox {
namespace {

constexpr uint32_t uid_max = std::numeric_limits<uint32_t>::max();

// The base names of a listing, each to its position + 1 (0: none): open addressing over one
// array, because folders of 100,000 messages are merged at every sync that lists, and a
// node-based map costs a cache miss or two per name more.
class BaseTable {
 public:
  explicit BaseTable(const std::vector<ListedFile>& files) : files_(files) {
    size_t capacity = 16;
    while (capacity < files.size() * 2) capacity <<= 1;
    slots_.assign(capacity, 0);
    mask_ = capacity - 1;
  }
  // The slot for `base`: its position + 1, or 0 where it may be added.
  uint32_t& slot(std::string_view base) {
    for (size_t i = std::hash<std::string_view>{}(base)&mask_;; i = (i + 1) & mask_) {
      uint32_t& slot = slots_[i];
      if (slot == 0 || files_[slot - 1].name.base == base) return slot;
    }
  }

 private:
  const std::vector<ListedFile>& files_;
  std::vector<uint32_t> slots_;
  size_t mask_;
};

// "new/<name>" or "cur/<name>", written only when it changed: most syncs find most files where
// they were.
void set_location(IndexEntry& entry, const ListedFile& file) {
  std::string_view dir = file.in_new ? "new/" : "cur/";
  std::string_view now = entry.location;
  if (now.size() == dir.size() + file.file_name.size() && now.starts_with(dir) && now.substr(4) == file.file_name)
    return;
  entry.location.assign(dir);
  entry.location += file.file_name;
}

// Entries for listed files that had none, with the next UIDs in the order of `fresh`.
void number_fresh(IndexState& state, const std::vector<const ListedFile*>& fresh, uint64_t modseq,
                  std::vector<uint32_t>& added) {
  for (const ListedFile* file : fresh) {
    IndexEntry entry;
    entry.uid = state.next_uid++;
    entry.modseq = modseq;
    entry.size = file->size;
    entry.vsize = file->vsize;
    entry.flags = file->name.flags;
    entry.base = file->name.base;
    set_location(entry, *file);
    added.push_back(entry.uid);
    state.entries.push_back(std::move(entry));
  }
}

// Files without an entry are numbered in order of delivery time (the number a base name starts
// with; names without one last), then base name.
void sort_for_numbering(std::vector<const ListedFile*>& fresh) {
  std::sort(fresh.begin(), fresh.end(), [](const ListedFile* a, const ListedFile* b) {
    auto ta = delivery_time(a->name.base).value_or(std::numeric_limits<int64_t>::max());
    auto tb = delivery_time(b->name.base).value_or(std::numeric_limits<int64_t>::max());
    if (ta != tb) return ta < tb;
    return a->name.base < b->name.base;
  });
}

// Splits off the word before the next single space; false when there is no space.
bool take_word(std::string_view& rest, std::string_view& word) {
  size_t space = rest.find(' ');
  if (space == std::string_view::npos) return false;
  word = rest.substr(0, space);
  rest.remove_prefix(space + 1);
  return true;
}

bool valid_keyword(std::string_view keyword) {
  if (keyword.empty() || keyword[0] == ':') return false;
  for (char c : keyword)
    if (c <= ' ' || c > '~') return false;
  return true;
}

Parsed<IndexState> fail(size_t line, std::string message) { return {std::nullopt, {line, std::move(message)}}; }

}  // namespace

Parsed<IndexState> parse_index(std::string_view text) {
  if (text.empty()) return fail(1, "empty file");
  if (text.back() != '\n')
    return fail(static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1, "truncated line");
  IndexState state;
  size_t line_number = 0;
  const size_t lines = static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
  state.entries.reserve(lines);
  std::unordered_set<std::string_view> bases;  // a hash set: indexes of 100,000 lines are common
  bases.reserve(lines);
  uint32_t last_uid = 0;
  while (!text.empty()) {
    size_t lf = text.find('\n');
    std::string_view line = text.substr(0, lf);
    text.remove_prefix(lf + 1);
    ++line_number;
    std::string_view word;
    if (line_number == 1) {
      std::string_view rest = line;
      std::optional<uint64_t> uidvalidity, next_uid, highest;
      if (!take_word(rest, word) || word != "tern-index" || !take_word(rest, word) || word != "1")
        return fail(1, "not a tern-index version 1 header");
      if (take_word(rest, word)) uidvalidity = parse_decimal<uint64_t>(word);
      if (take_word(rest, word)) next_uid = parse_decimal<uint64_t>(word);
      highest = parse_decimal<uint64_t>(rest);
      if (!uidvalidity || !next_uid || !highest || *uidvalidity == 0 || *uidvalidity > uid_max || *next_uid == 0 ||
          *next_uid > uid_max)
        return fail(1, "invalid header values");
      state.uidvalidity = static_cast<uint32_t>(*uidvalidity);
      state.next_uid = static_cast<uint32_t>(*next_uid);
      state.highest_modseq = *highest;
      continue;
    }
    if (line.starts_with("x ") || line.starts_with("f ")) {
      std::string_view rest = line.substr(2);
      std::optional<uint64_t> number, modseq;
      if (line[0] == 'f') {
        modseq = parse_decimal<uint64_t>(rest);
        if (!modseq || *modseq > state.highest_modseq || state.forgotten_modseq != 0)
          return fail(line_number, "invalid forgotten MODSEQ");
        state.forgotten_modseq = *modseq;
        continue;
      }
      if (take_word(rest, word)) number = parse_decimal<uint64_t>(word);
      modseq = parse_decimal<uint64_t>(rest);
      uint32_t last_vanished = state.vanished.empty() ? 0 : state.vanished.back().uid;
      if (!number || *number == 0 || *number <= last_vanished || *number >= state.next_uid || !modseq || *modseq == 0 ||
          *modseq > state.highest_modseq || state.forgotten_modseq != 0)
        return fail(line_number, "invalid expunged UID line");
      state.vanished.push_back({static_cast<uint32_t>(*number), *modseq});
      continue;
    }
    if (!state.vanished.empty() || state.forgotten_modseq != 0)
      return fail(line_number, "message line after the expunged UIDs");
    IndexEntry entry;
    std::string_view rest = line;
    std::optional<uint64_t> uid, modseq, size, vsize;
    if (take_word(rest, word)) uid = parse_decimal<uint64_t>(word);
    if (!uid || *uid == 0 || *uid <= last_uid || *uid >= state.next_uid)
      return fail(line_number, "UID missing, not ascending or not below the next UID");
    last_uid = static_cast<uint32_t>(*uid);
    if (take_word(rest, word)) modseq = parse_decimal<uint64_t>(word);
    if (!modseq || *modseq == 0 || *modseq > state.highest_modseq) return fail(line_number, "invalid MODSEQ");
    if (take_word(rest, word)) size = parse_decimal<uint64_t>(word);
    if (!size) return fail(line_number, "invalid size");
    if (take_word(rest, word)) vsize = parse_decimal<uint64_t>(word);
    if (!vsize) return fail(line_number, "invalid vsize");
    if (!take_word(rest, word) || word.empty()) return fail(line_number, "no flag letters");
    auto flags = word == "-" ? std::optional<MaildirFlags>(MaildirFlags{}) : parse_flag_letters(word);
    if (!flags || (word != "-" && format_flag_letters(*flags) != word))
      return fail(line_number, "invalid or unsorted flag letters");
    while (!rest.empty() && rest[0] != ':') {
      if (!take_word(rest, word) || !valid_keyword(word)) return fail(line_number, "invalid keyword");
      entry.keywords.emplace_back(word);
    }
    if (rest.empty()) return fail(line_number, "no base name");
    rest.remove_prefix(1);
    if (!valid_base_name(rest)) return fail(line_number, "invalid base name");
    if (!bases.insert(rest).second) return fail(line_number, "base name listed twice");
    entry.uid = last_uid;
    entry.modseq = *modseq;
    entry.size = *size;
    entry.vsize = *vsize;
    entry.flags = std::move(*flags);
    entry.base = std::string(rest);
    state.entries.push_back(std::move(entry));
  }
  // An expunged UID cannot be a message's too.
  for (const auto& v : state.vanished) {
    auto found = std::lower_bound(state.entries.begin(), state.entries.end(), v.uid,
                                  [](const IndexEntry& e, uint32_t uid) { return e.uid < uid; });
    if (found != state.entries.end() && found->uid == v.uid) return fail(line_number, "an expunged UID is listed");
  }
  return {std::move(state), {}};
}

void record_vanished(IndexState& state, const std::vector<uint32_t>& uids, uint64_t modseq) {
  if (uids.empty()) return;
  std::vector<VanishedEntry> added;
  for (uint32_t uid : uids) added.push_back({uid, modseq});
  std::vector<VanishedEntry> merged;
  merged.reserve(state.vanished.size() + added.size());
  std::merge(state.vanished.begin(), state.vanished.end(), added.begin(), added.end(), std::back_inserter(merged),
             [](const VanishedEntry& a, const VanishedEntry& b) { return a.uid < b.uid; });
  merged.erase(std::unique(merged.begin(), merged.end(),
                           [](const VanishedEntry& a, const VanishedEntry& b) { return a.uid == b.uid; }),
               merged.end());
  if (merged.size() > max_vanished) {
    // Forget the oldest expunges: everything up to the MODSEQ of the newest one that must go
    // (ties go too, so at most max_vanished stay).
    std::vector<uint64_t> modseqs;
    for (const auto& v : merged) modseqs.push_back(v.modseq);
    size_t drop = merged.size() - max_vanished;
    std::nth_element(modseqs.begin(), modseqs.begin() + static_cast<std::ptrdiff_t>(drop - 1), modseqs.end());
    uint64_t horizon = modseqs[drop - 1];
    std::erase_if(merged, [&](const VanishedEntry& v) { return v.modseq <= horizon; });
    state.forgotten_modseq = std::max(state.forgotten_modseq, horizon);
  }
  state.vanished = std::move(merged);
}

std::string format_index(const IndexState& state) {
  std::string text = "tern-index 1 " + std::to_string(state.uidvalidity) + " " + std::to_string(state.next_uid) + " " +
                     std::to_string(state.highest_modseq) + "\n";
  for (const auto& entry : state.entries) {
    std::string letters = format_flag_letters(entry.flags);
    text += std::to_string(entry.uid) + " " + std::to_string(entry.modseq) + " " + std::to_string(entry.size) + " " +
            std::to_string(entry.vsize) + " " + (letters.empty() ? "-" : letters);
    for (const auto& keyword : entry.keywords) text += " " + keyword;
    text += " :" + entry.base + "\n";
  }
  for (const auto& v : state.vanished) text += "x " + std::to_string(v.uid) + " " + std::to_string(v.modseq) + "\n";
  if (state.forgotten_modseq != 0) text += "f " + std::to_string(state.forgotten_modseq) + "\n";
  return text;
}

MergeResult merge_listing(IndexState old, std::vector<ListedFile> files, uint32_t fresh_uidvalidity) {
  // One file per base name, the cur/ one when a base is listed in both.
  BaseTable by_base(files);
  std::vector<bool> taken(files.size(), false);  // matched by an entry, or a duplicate
  for (size_t i = 0; i < files.size(); ++i) {
    uint32_t& slot = by_base.slot(files[i].name.base);
    if (slot == 0) {
      slot = static_cast<uint32_t>(i) + 1;
    } else if (files[slot - 1].in_new && !files[i].in_new) {
      taken[slot - 1] = true;
      slot = static_cast<uint32_t>(i) + 1;
    } else {
      taken[i] = true;
    }
  }

  // The entries are updated where they are (old is ours): no copy of 100,000 strings.
  MergeResult result;
  const uint64_t modseq = old.highest_modseq + 1;
  const uint64_t old_highest = old.highest_modseq;
  std::erase_if(old.entries, [&](IndexEntry& entry) {
    uint32_t slot = by_base.slot(entry.base);
    if (slot == 0) {
      result.expunged.push_back(entry.uid);
      return true;
    }
    const ListedFile& file = files[slot - 1];
    taken[slot - 1] = true;
    bool changed = file.name.flags != entry.flags || file.size != entry.size || entry.modseq == 0;
    // The counted vsize stays valid while the file keeps its size (Maildir files never change).
    entry.vsize = file.vsize ? file.vsize : file.size == entry.size ? entry.vsize : 0;
    entry.flags = file.name.flags;
    entry.size = file.size;
    set_location(entry, file);
    if (changed) {
      entry.modseq = modseq;
      result.changed.push_back(entry.uid);
    }
    return false;
  });
  IndexState& state = result.state;
  state = std::move(old);

  std::vector<const ListedFile*> fresh;
  for (size_t i = 0; i < files.size(); ++i)
    if (!taken[i]) fresh.push_back(&files[i]);
  sort_for_numbering(fresh);

  // UIDs go up to 2^32-2 (Dovecot never uses 2^32-1 either).
  if (uint64_t{state.next_uid} + fresh.size() > uid_max) {
    result.renumbered = true;
    result.changed.clear();
    // Every old UID is void: those whose file went and those kept under a new number.
    for (const auto& entry : state.entries) result.expunged.push_back(entry.uid);
    std::sort(result.expunged.begin(), result.expunged.end());
    state.uidvalidity = fresh_uidvalidity;
    state.next_uid = 1;
    state.vanished.clear();  // a new UIDVALIDITY: clients resynchronise from scratch
    state.forgotten_modseq = 0;
    for (auto& entry : state.entries) {
      entry.uid = state.next_uid++;
      entry.modseq = modseq;
      result.added.push_back(entry.uid);
    }
  }
  number_fresh(state, fresh, modseq, result.added);
  state.highest_modseq = result.modified() ? modseq : old_highest;
  if (!result.renumbered) record_vanished(state, result.expunged, modseq);
  return result;
}

bool merge_new_listing(IndexState& state, std::vector<ListedFile> new_files, NewListingChanges& changes) {
  changes = NewListingChanges{};
  BaseTable by_base(new_files);
  std::vector<bool> taken(new_files.size(), false);
  for (size_t i = 0; i < new_files.size(); ++i) {
    uint32_t& slot = by_base.slot(new_files[i].name.base);
    if (slot == 0)
      slot = static_cast<uint32_t>(i) + 1;
    else
      taken[i] = true;  // one file per base
  }
  // A file of an entry is not new; nor is one whose base an entry in cur/ has (the cur/ file wins,
  // as in merge_listing).
  for (const auto& entry : state.entries)
    if (uint32_t slot = by_base.slot(entry.base)) taken[slot - 1] = true;
  std::vector<const ListedFile*> fresh;
  for (size_t i = 0; i < new_files.size(); ++i)
    if (!taken[i]) fresh.push_back(&new_files[i]);
  if (uint64_t{state.next_uid} + fresh.size() > uid_max) return false;
  sort_for_numbering(fresh);

  const uint64_t modseq = state.highest_modseq + 1;
  std::erase_if(state.entries, [&](IndexEntry& entry) {
    if (!entry.location.starts_with("new/")) return false;
    uint32_t slot = by_base.slot(entry.base);
    if (slot == 0) {
      changes.expunged.push_back(entry.uid);
      return true;
    }
    const ListedFile& file = new_files[slot - 1];
    if (file.name.flags != entry.flags || file.size != entry.size) {
      entry.flags = file.name.flags;
      entry.vsize = file.vsize ? file.vsize : file.size == entry.size ? entry.vsize : 0;
      entry.size = file.size;
      entry.modseq = modseq;
      changes.changed.push_back(entry.uid);
    }
    set_location(entry, file);
    return false;
  });
  number_fresh(state, fresh, modseq, changes.added);
  if (changes.modified()) state.highest_modseq = modseq;
  record_vanished(state, changes.expunged, modseq);
  return true;
}

IndexState state_from_uidlist(const UidList& list) {
  IndexState state;
  state.uidvalidity = list.uidvalidity;
  state.next_uid = list.next_uid;
  std::set<std::string_view> seen;
  // Later lines win: walk backwards, keep the first sighting, then restore UID order.
  for (auto it = list.entries.rbegin(); it != list.entries.rend(); ++it) {
    if (!seen.insert(it->base).second) continue;
    IndexEntry entry;
    entry.uid = it->uid;
    entry.base = it->base;
    state.entries.push_back(std::move(entry));
  }
  std::reverse(state.entries.begin(), state.entries.end());
  return state;
}

}  // namespace tern::mailbox
