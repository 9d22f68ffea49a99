// A dns::Resolver for the mail-authentication unit tests: TXT answers from a map (names without
// the final dot, compared case-insensitively), NXDOMAIN for names it does not know; every other
// kind of question is a test failure. Records each TXT question asked.
#pragma once
#include <gtest/gtest.h>

#include <boost/asio/awaitable.hpp>
#include <cctype>
#include <map>
#include <string>
#include <vector>

#include "dns/resolver.h"

namespace tern::testing {

class TxtResolver : public dns::Resolver {
 public:
  std::map<std::string, dns::TxtAnswer> answers;  // by lowercased name
  std::vector<std::string> asked;                 // as asked

  void add(const std::string& name, const std::string& text) {
    dns::TxtAnswer& a = answers[key(name)];
    a.status.outcome = dns::Outcome::ok;
    a.texts.push_back(text);
  }
  void set(const std::string& name, dns::Outcome outcome, const std::string& why = "") {
    dns::TxtAnswer& a = answers[key(name)];
    a.status.outcome = outcome;
    a.status.why = why;
  }
  dns::TxtAnswer lookup(const std::string& name) const {
    auto it = answers.find(key(name));
    if (it != answers.end()) return it->second;
    dns::TxtAnswer none;
    none.status.outcome = dns::Outcome::nxdomain;
    return none;
  }

  boost::asio::awaitable<dns::TxtAnswer> txt(std::string name) override {
    if (name.ends_with(".")) name.pop_back();
    asked.push_back(name);
    co_return lookup(name);
  }
  boost::asio::awaitable<dns::MxAnswer> mx(std::string) override {
    ADD_FAILURE() << "unexpected MX question";
    co_return dns::MxAnswer{};
  }
  boost::asio::awaitable<dns::AddressAnswer> addresses(std::string) override {
    ADD_FAILURE() << "unexpected address question";
    co_return dns::AddressAnswer{};
  }
  boost::asio::awaitable<dns::AddressAnswer> a(std::string) override {
    ADD_FAILURE() << "unexpected A question";
    co_return dns::AddressAnswer{};
  }
  boost::asio::awaitable<dns::AddressAnswer> aaaa(std::string) override {
    ADD_FAILURE() << "unexpected AAAA question";
    co_return dns::AddressAnswer{};
  }
  boost::asio::awaitable<dns::TlsaAnswer> tlsa(std::string) override {
    ADD_FAILURE() << "unexpected TLSA question";
    co_return dns::TlsaAnswer{};
  }
  boost::asio::awaitable<dns::PtrAnswer> ptr(std::string) override {
    ADD_FAILURE() << "unexpected PTR question";
    co_return dns::PtrAnswer{};
  }

 private:
  static std::string key(std::string name) {
    if (name.ends_with(".")) name.pop_back();
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return name;
  }
};

}  // namespace tern::testing
