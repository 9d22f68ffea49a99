#include "directory/resolver.h"

#include <algorithm>

namespace tern::directory {

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::deliver:
      return "deliver";
    case Verdict::not_hosted:
      return "not-hosted";
    case Verdict::unknown:
      return "unknown";
    case Verdict::disabled:
      return "disabled";
    case Verdict::loop:
      return "loop";
  }
  return "unknown";
}

std::string default_maildir(const ResolverSettings& settings, const User& user) {
  if (!user.maildir.empty()) return user.maildir;
  return settings.domains_dir + "/" + user.domain + "/" + user.local + "/Maildir";
}

StoreOptions store_options(const Config& c) {
  return {c.directory.backend, c.directory.sqlite_path.string(), c.directory.postgresql};
}

ResolverSettings resolver_settings(const Config& c) {
  ResolverSettings s;
  s.separators = c.directory.extension_separators;
  s.postmaster = c.directory.postmaster;
  s.domains_dir = c.domains_dir().string();
  return s;
}

namespace {

struct Expansion {
  Store& store;
  const ResolverSettings& settings;
  Resolution out;
  std::vector<std::string> chain;   // addresses being expanded, outermost first
  std::optional<std::string> loop;  // the first loop met, as text
  std::vector<std::string> notes;
  Verdict first_failure = Verdict::deliver;
  bool in_catchall = false;

  void fail(Verdict v, std::string note) {
    if (first_failure == Verdict::deliver) first_failure = v;
    notes.push_back(std::move(note));
  }

  void add_mailbox(const User& u) {
    Mailbox m{u.address(), default_maildir(settings, u), u.quota_bytes, u.quota_messages};
    for (const auto& existing : out.mailboxes)
      if (existing.maildir == m.maildir) return;
    out.mailboxes.push_back(std::move(m));
  }

  void add_remote(const std::string& a) {
    if (std::find(out.remote.begin(), out.remote.end(), a) == out.remote.end()) out.remote.push_back(a);
  }

  // Candidate local parts: the whole one, then shorter at each separator from the right.
  std::vector<std::string> candidates(const std::string& local) const {
    std::vector<std::string> c{local};
    std::string rest = local;
    while (true) {
      size_t pos = rest.find_last_of(settings.separators);
      if (pos == std::string::npos || pos == 0) break;
      rest = rest.substr(0, pos);
      c.push_back(rest);
    }
    return c;
  }

  void expand(const std::string& address, int depth) {
    auto parts = split_address(address);
    if (!parts) {
      fail(Verdict::unknown, "\"" + address + "\" is not an address");
      return;
    }
    std::string local = to_lower_ascii(parts->first);
    std::string asked_domain = to_lower_ascii(parts->second);
    // A domain in U-labels (an SMTPUTF8 recipient, as the queue stored it): hosted domains are
    // stored in their A-label form.
    if (std::any_of(asked_domain.begin(), asked_domain.end(),
                    [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
      std::string error;
      if (auto ascii = domain_to_ascii(asked_domain, error)) asked_domain = *ascii;
    }
    auto domain_name = store.canonical_domain(asked_domain);
    if (!domain_name) {
      if (depth == 0) {
        out.verdict = Verdict::not_hosted;
        return;
      }
      add_remote(parts->first + "@" + asked_domain);
      return;
    }
    std::string canonical = local + "@" + *domain_name;
    if (std::find(chain.begin(), chain.end(), canonical) != chain.end()) {
      if (!loop) {
        std::string text;
        for (const auto& a : chain) text += a + " -> ";
        loop = text + canonical;
      }
      return;
    }
    if (depth > settings.max_depth) {
      if (!loop) loop = "more than " + std::to_string(settings.max_depth) + " levels of aliases from " + chain.front();
      return;
    }
    chain.push_back(canonical);
    expand_hosted(local, *domain_name, depth);
    chain.pop_back();
  }

  void expand_hosted(const std::string& local, const std::string& domain_name, int depth) {
    auto domain = store.find_domain(domain_name);
    if (!domain) return;  // deleted between two queries
    if (!domain->enabled) {
      fail(Verdict::disabled, "domain " + domain_name + " is disabled");
      return;
    }
    for (const auto& candidate : candidates(local)) {
      if (auto user = store.find_user(domain_name, candidate)) {
        expand_user(*user, depth);
        return;
      }
      if (auto alias = store.find_alias(domain_name, candidate)) {
        for (const auto& t : alias->targets) expand(t, depth + 1);
        notes.push_back("alias " + alias->address());
        return;
      }
    }
    if (local == "postmaster" || local == "abuse") {  // RFC 2142: these always exist
      std::string target = !domain->postmaster.empty() ? domain->postmaster : settings.postmaster;
      notes.push_back("role address " + local + "@" + domain_name);
      size_t before = out.mailboxes.size() + out.remote.size();
      if (!target.empty()) expand(target, depth + 1);
      if (out.mailboxes.size() + out.remote.size() == before) {
        // No target, or one that leads nowhere: the domain's own postmaster mailbox, so the
        // role address still resolves.
        if (!target.empty()) notes.push_back("postmaster target " + target + " leads nowhere; using the mailbox");
        User implicit;
        implicit.domain = domain_name;
        implicit.local = "postmaster";
        add_mailbox(implicit);
      }
      return;
    }
    if (!domain->catchall.empty() && !in_catchall) {
      notes.push_back("catch-all of " + domain_name);
      // The catch-all's own target is resolved without catch-alls: an unknown target is then
      // "unknown" (550), not a loop through the catch-all.
      in_catchall = true;
      expand(domain->catchall, depth + 1);
      in_catchall = false;
      return;
    }
    fail(Verdict::unknown, "no user or alias " + local + "@" + domain_name);
  }

  void expand_user(const User& user, int depth) {
    if (!user.enabled) {
      fail(Verdict::disabled, "user " + user.address() + " is disabled");
      return;
    }
    if (user.forwards.empty() || user.keep_copy) add_mailbox(user);
    for (const auto& f : user.forwards) expand(f, depth + 1);
    if (!user.forwards.empty()) notes.push_back("forwards of " + user.address());
  }
};

}  // namespace

Resolution resolve(Store& store, const ResolverSettings& settings, std::string_view address) {
  Expansion e{store, settings, {}, {}, {}, {}, Verdict::deliver};
  e.expand(std::string(address), 0);
  if (e.out.verdict == Verdict::not_hosted) {
    e.out.detail = "not a hosted domain";
    return e.out;
  }
  if (!e.out.mailboxes.empty() || !e.out.remote.empty()) {
    e.out.verdict = Verdict::deliver;
  } else if (e.loop) {
    e.out.verdict = Verdict::loop;
    e.notes.push_back("alias loop: " + *e.loop);
  } else {
    e.out.verdict = e.first_failure == Verdict::deliver ? Verdict::unknown : e.first_failure;
  }
  for (const auto& n : e.notes) e.out.detail += (e.out.detail.empty() ? "" : "; ") + n;
  return e.out;
}

std::optional<std::string> find_loop(Store& store, const ResolverSettings& settings, std::string_view address,
                                     std::string_view target) {
  Expansion e{store, settings, {}, {}, {}, {}, Verdict::deliver};
  auto parts = split_address(address);
  if (!parts) return std::nullopt;
  auto domain = store.canonical_domain(parts->second);
  if (!domain) return std::nullopt;
  e.chain.push_back(to_lower_ascii(parts->first) + "@" + *domain);
  e.expand(std::string(target), 1);
  return e.loop;
}

}  // namespace tern::directory
