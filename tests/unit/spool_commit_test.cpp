// The spool's group commit (queue/committer.h), its spare files, what scan() makes of every
// state a crash can leave (docs/ARCHITECTURE.md, "The spool"), and the same group commit for
// Maildir deliveries (deliver/maildir.h).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "core/files.h"
#include "deliver/maildir.h"
#include "queue/spool.h"

using namespace tern::queue;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("tern-spool-commit-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(dir);
  return dir;
}

SpoolEnvelope envelope_for(const std::string& id, const std::string& rcpt) {
  SpoolEnvelope e;
  e.id = id;
  e.received = 1764031559;
  e.client = "[127.0.0.1]";
  e.helo = "client.example";
  e.sender = "s@example.org";
  SpoolRecipient r;
  r.address = rcpt;
  e.recipients.push_back(r);
  return e;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

size_t count_files(const fs::path& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

// Results of asynchronous requests, filled on the committer thread.
struct Results {
  std::mutex mutex;
  std::vector<std::error_code> codes;
  Spool::Done add() {
    std::lock_guard lock(mutex);
    size_t slot = codes.size();
    codes.emplace_back(std::make_error_code(std::errc::interrupted));  // "not called"
    return [this, slot](std::error_code ec) {
      std::lock_guard lock(mutex);
      codes[slot] = ec;
    };
  }
};

// Holds the committer thread inside a done callback until released, so that every request
// queued meanwhile lands in the next batch.
struct Gate {
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  void hold(Spool& spool) {
    spool.remove("no-such-id", [this](std::error_code) {
      entered.set_value();
      released.wait();
    });
    entered.get_future().wait();
  }
  void open() { release.set_value(); }
};

}  // namespace

TEST(SpoolCommit, ManyConcurrentCommitsShareSyncsAndSurviveARestart) {
  fs::path dir = fresh_dir("many");
  std::atomic<int> syncs{0};
  const int n = 300;
  Results results;
  {
    // A slow sync (as a disk is) lets requests pile up while one batch is being synced.
    Spool spool(dir, [&]() -> std::error_code {
      ++syncs;
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
      return {};
    });
    ASSERT_FALSE(spool.open());
    for (int i = 0; i < n; ++i) {
      Spool::Incoming in;
      ASSERT_FALSE(spool.create(in));
      ASSERT_FALSE(spool.append(in, "Subject: " + std::to_string(i) + "\n\nbody\n"));
      spool.commit(in, envelope_for(in.id, "r" + std::to_string(i) + "@example.test"), results.add());
      EXPECT_EQ(in.fd, -1);
      if (i % 20 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // sessions arrive over time
    }
    spool.drain();
    Committer::Stats st = spool.commit_stats();
    EXPECT_EQ(st.requests, uint64_t(n));
    EXPECT_EQ(st.syncs, uint64_t(syncs.load()));
    EXPECT_EQ(st.syncs, 2 * st.batches) << "two syncs per batch of commits";
    EXPECT_LT(st.batches, uint64_t(n / 4)) << "commits waiting together share a batch";
    EXPECT_GT(st.largest_batch, 4u);
  }
  for (const auto& ec : results.codes) EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(count_files(dir / "msg"), size_t(n));
  EXPECT_EQ(count_files(dir / "env"), size_t(n));

  Spool again(dir);
  ASSERT_FALSE(again.open());
  std::vector<std::string> problems;
  auto queued = again.scan(problems);
  EXPECT_TRUE(problems.empty());
  ASSERT_EQ(queued.size(), size_t(n));
  for (const auto& env : queued) {
    std::string body = slurp(dir / "msg" / env.id);
    std::string i = env.recipients.at(0).address.substr(1, env.recipients[0].address.find('@') - 1);
    EXPECT_EQ(body, "Subject: " + i + "\n\nbody\n");
  }
  fs::remove_all(dir);
}

TEST(SpoolCommit, AFailedSyncFailsTheWholeBatchAndLeavesNoFiles) {
  for (int failing_sync : {1, 2}) {  // before the envelopes are renamed into place, or after
    fs::path dir = fresh_dir("fail" + std::to_string(failing_sync));
    std::atomic<int> calls{0};
    Results results;
    {
      Spool spool(dir, [&]() -> std::error_code {
        if (++calls == failing_sync) return std::make_error_code(std::errc::io_error);
        return {};
      });
      ASSERT_FALSE(spool.open());
      Gate gate;
      gate.hold(spool);
      for (int i = 0; i < 10; ++i) {
        Spool::Incoming in;
        ASSERT_FALSE(spool.create(in));
        ASSERT_FALSE(spool.append(in, "body\n"));
        spool.commit(in, envelope_for(in.id, "a@example.test"), results.add());
      }
      gate.open();
      spool.drain();
      EXPECT_EQ(spool.commit_stats().batches, 2u) << "the gate's batch, then all ten commits";
    }
    ASSERT_EQ(results.codes.size(), 10u);
    for (const auto& ec : results.codes) EXPECT_EQ(ec, std::errc::io_error) << "sync " << failing_sync;
    EXPECT_EQ(count_files(dir / "msg"), 0u);
    EXPECT_EQ(count_files(dir / "env"), 0u);
    fs::remove_all(dir);
  }
}

TEST(SpoolCommit, AFailedSyncKeepsTheOldEnvelopeOfAnUpdate) {
  fs::path dir = fresh_dir("update-fail");
  bool fail = false;
  Spool spool(dir, [&]() -> std::error_code {
    return fail ? std::make_error_code(std::errc::no_space_on_device) : std::error_code{};
  });
  ASSERT_FALSE(spool.open());
  Spool::Incoming in;
  ASSERT_FALSE(spool.create(in));
  SpoolEnvelope env = envelope_for(in.id, "a@example.test");
  ASSERT_FALSE(spool.commit(in, env));  // the synchronous form
  std::string before = slurp(dir / "env" / in.id);
  fail = true;  // the committer is idle: no data race
  env.recipients[0].attempts = 3;
  std::promise<std::error_code> done;
  spool.update(env, [&](std::error_code ec) { done.set_value(ec); });
  EXPECT_EQ(done.get_future().get(), std::errc::no_space_on_device);
  EXPECT_EQ(slurp(dir / "env" / in.id), before);
  EXPECT_FALSE(fs::exists(dir / "env" / (in.id + ".tmp")));
  EXPECT_TRUE(fs::exists(dir / "msg" / in.id));
  fs::remove_all(dir);
}

TEST(SpoolCommit, UpdatesAndRemovesApplyInOrder) {
  fs::path dir = fresh_dir("order");
  Spool spool(dir);  // the real syncfs(2)
  ASSERT_FALSE(spool.open());
  std::vector<SpoolEnvelope> envs;
  for (int i = 0; i < 3; ++i) {
    Spool::Incoming in;
    ASSERT_FALSE(spool.create(in));
    ASSERT_FALSE(spool.append(in, "body\n"));
    envs.push_back(envelope_for(in.id, "a@example.test"));
    ASSERT_FALSE(spool.commit(in, envs.back()));
  }
  Results results;
  Gate gate;
  gate.hold(spool);  // everything below is one batch
  envs[0].recipients[0].attempts = 1;
  spool.update(envs[0], results.add());  // 0: updated twice, the last text wins
  envs[0].recipients[0].attempts = 2;
  spool.update(envs[0], results.add());
  spool.update(envs[1], results.add());  // 1: updated, then removed: the update is moot
  spool.remove(envs[1].id, results.add());
  spool.remove(envs[2].id, results.add());  // 2: removed, then an update finds it gone
  spool.update(envs[2], results.add());
  gate.open();
  spool.drain();
  ASSERT_EQ(results.codes.size(), 6u);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(results.codes[i]) << i << ": " << results.codes[i].message();
  EXPECT_EQ(results.codes[5], std::errc::no_such_file_or_directory);
  EXPECT_FALSE(fs::exists(dir / "env" / envs[1].id));
  EXPECT_FALSE(fs::exists(dir / "msg" / envs[1].id));
  EXPECT_FALSE(fs::exists(dir / "env" / envs[2].id)) << "an update never brings a removed message back";
  EXPECT_FALSE(fs::exists(dir / "msg" / envs[2].id));
  EXPECT_EQ(slurp(dir / "env" / envs[0].id), serialize(envs[0]));

  // An update in a later batch than the remove is refused the same way.
  std::promise<std::error_code> late;
  spool.update(envs[1], [&](std::error_code ec) { late.set_value(ec); });
  EXPECT_EQ(late.get_future().get(), std::errc::no_such_file_or_directory);
  EXPECT_FALSE(fs::exists(dir / "env" / envs[1].id));
  EXPECT_EQ(count_files(dir / "env"), 1u);
  fs::remove_all(dir);
}

// Every state a crash can leave with syncfs as the durability point, and what the next start does.
TEST(SpoolCommit, ScanAfterACrashKeepsExactlyTheAcknowledgedMessages) {
  fs::path dir = fresh_dir("crash");
  fs::create_directories(dir / "msg");
  fs::create_directories(dir / "env");
  auto put = [&](const fs::path& p, const std::string& text) { std::ofstream(p) << text; };
  const std::string receiving = "00000000000001-aaaaaa", committing = "00000000000002-bbbbbb",
                    queued = "00000000000003-cccccc", finishing = "00000000000004-dddddd",
                    updating = "00000000000005-eeeeee", damaged = "00000000000006-ffffff",
                    torn_tmp = "00000000000007-121212";
  // Reception cut short (or the first sync never happened): a body, maybe partial, no envelope.
  put(dir / "msg" / receiving, "Subject: par");
  // Crash inside a batch before its renames: body and envelope text, but only as env/I.tmp.
  put(dir / "msg" / committing, "body\n");
  put(dir / "env" / (committing + ".tmp"), serialize(envelope_for(committing, "b@example.test")));
  // Crash before the first sync: the .tmp may be empty or partial.
  put(dir / "msg" / torn_tmp, "");
  put(dir / "env" / (torn_tmp + ".tmp"), "tern-env");
  // Acknowledged: both whole.
  put(dir / "msg" / queued, "body\n");
  put(dir / "env" / queued, serialize(envelope_for(queued, "c@example.test")));
  // A removal cut short after msg/I went but before env/I's unlink reached the disk.
  put(dir / "env" / finishing, serialize(envelope_for(finishing, "d@example.test")));
  // An update cut short: the old env/I is whole, the new text is a leftover .tmp.
  SpoolEnvelope old_state = envelope_for(updating, "e@example.test");
  put(dir / "msg" / updating, "body\n");
  put(dir / "env" / updating, serialize(old_state));
  SpoolEnvelope new_state = old_state;
  new_state.recipients[0].attempts = 7;
  put(dir / "env" / (updating + ".tmp"), serialize(new_state).substr(0, 20));
  // Not something the spool writes (damage, or another version): left for an administrator.
  put(dir / "msg" / damaged, "body\n");
  put(dir / "env" / damaged, "something else\n");

  Spool spool(dir);
  ASSERT_FALSE(spool.open());
  std::vector<std::string> problems;
  auto loaded = spool.scan(problems);
  std::vector<std::string> ids;
  for (const auto& e : loaded) ids.push_back(e.id);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{queued, updating}));
  for (const auto& e : loaded) {
    if (e.id == updating) {
      EXPECT_EQ(e.recipients.at(0).attempts, 0u) << "the old state, whole";
    }
  }
  ASSERT_EQ(problems.size(), 2u);
  std::sort(problems.begin(), problems.end());
  EXPECT_TRUE(problems[0].starts_with(finishing + ": envelope without its message file")) << problems[0];
  EXPECT_TRUE(problems[1].starts_with(damaged + ": unreadable envelope")) << problems[1];

  std::vector<std::string> msgs, envs;
  for (const auto& e : fs::directory_iterator(dir / "msg")) msgs.push_back(e.path().filename().string());
  for (const auto& e : fs::directory_iterator(dir / "env")) envs.push_back(e.path().filename().string());
  std::sort(msgs.begin(), msgs.end());
  std::sort(envs.begin(), envs.end());
  EXPECT_EQ(msgs, (std::vector<std::string>{queued, updating, damaged}));
  EXPECT_EQ(envs, (std::vector<std::string>{queued, updating, damaged}));
  fs::remove_all(dir);
}

TEST(SpoolCommit, FinishedMessagesFilesAreReusedAndHoldExactlyTheNewContent) {
  fs::path dir = fresh_dir("spares");
  Spool spool(dir);
  ASSERT_FALSE(spool.open());
  Spool::Incoming first;
  ASSERT_FALSE(spool.create(first));
  ASSERT_FALSE(spool.append(first, std::string(5000, 'x') + "\n"));
  SpoolEnvelope long_env = envelope_for(first.id, std::string(300, 'a') + "@example.test");
  ASSERT_FALSE(spool.commit(first, long_env));
  struct stat msg_before {};
  ASSERT_EQ(::stat((dir / "msg" / first.id).c_str(), &msg_before), 0);
  std::promise<std::error_code> removed;
  spool.remove(first.id, [&](std::error_code ec) { removed.set_value(ec); });
  ASSERT_FALSE(removed.get_future().get());
  EXPECT_EQ(count_files(dir / "free"), 2u) << "msg and env became spares";
  EXPECT_EQ(count_files(dir / "msg"), 0u);

  Spool::Incoming second;
  ASSERT_FALSE(spool.create(second));
  ASSERT_FALSE(spool.append(second, "short\n"));
  SpoolEnvelope short_env = envelope_for(second.id, "b@example.test");
  ASSERT_FALSE(spool.commit(second, short_env));
  EXPECT_EQ(count_files(dir / "free"), 0u);
  struct stat msg_after {};
  ASSERT_EQ(::stat((dir / "msg" / second.id).c_str(), &msg_after), 0);
  EXPECT_EQ(msg_after.st_ino, msg_before.st_ino) << "the spare was reused, no new inode";
  EXPECT_EQ(slurp(dir / "msg" / second.id), "short\n");
  EXPECT_EQ(slurp(dir / "env" / second.id), serialize(short_env));

  // An update swaps the envelope's names: the old one becomes a spare.
  short_env.recipients[0].attempts = 4;
  std::promise<std::error_code> updated;
  spool.update(short_env, [&](std::error_code ec) { updated.set_value(ec); });
  ASSERT_FALSE(updated.get_future().get());
  EXPECT_EQ(slurp(dir / "env" / second.id), serialize(short_env));
  EXPECT_EQ(count_files(dir / "env"), 1u);
  EXPECT_EQ(count_files(dir / "free"), 1u);

  fs::remove_all(dir);
}

TEST(SpoolCommit, AFileStillBeingReadIsNeverReused) {
  fs::path dir = fresh_dir("held");
  Spool spool(dir);
  ASSERT_FALSE(spool.open());
  Spool::Incoming in;
  ASSERT_FALSE(spool.create(in));
  ASSERT_FALSE(spool.append(in, "the original\n"));
  ASSERT_FALSE(spool.commit(in, envelope_for(in.id, "a@example.test")));
  int held = spool.open_message(in.id);  // as a delivery of it would, when it is deleted meanwhile
  ASSERT_GE(held, 0);
  std::promise<std::error_code> removed;
  spool.remove(in.id, [&](std::error_code ec) { removed.set_value(ec); });
  ASSERT_FALSE(removed.get_future().get());
  EXPECT_EQ(count_files(dir / "free"), 1u) << "the envelope only";
  EXPECT_EQ(spool.open_message(in.id), -1);
  Spool::Incoming next;
  ASSERT_FALSE(spool.create(next));
  ASSERT_FALSE(spool.append(next, "another message\n"));
  ASSERT_FALSE(spool.commit(next, envelope_for(next.id, "b@example.test")));
  std::string content;
  ASSERT_FALSE(tern::files::read_fd(held, content));
  EXPECT_EQ(content, "the original\n");
  ::close(held);
  fs::remove_all(dir);
}

TEST(SpoolCommit, SparesLeftByAnEarlierRunAreUsedAgain) {
  fs::path dir = fresh_dir("spares-restart");
  {
    Spool spool(dir);
    ASSERT_FALSE(spool.open());
    Spool::Incoming in;
    ASSERT_FALSE(spool.create(in));
    ASSERT_FALSE(spool.append(in, "body\n"));
    spool.abort(in);  // an aborted reception's file is a spare too
    EXPECT_EQ(count_files(dir / "free"), 1u);
  }
  Spool spool(dir);
  ASSERT_FALSE(spool.open());
  std::vector<std::string> problems;
  EXPECT_TRUE(spool.scan(problems).empty());
  EXPECT_TRUE(problems.empty());
  Spool::Incoming in;
  ASSERT_FALSE(spool.create(in));
  EXPECT_EQ(count_files(dir / "free"), 0u);
  ASSERT_FALSE(spool.append(in, "new\n"));
  ASSERT_FALSE(spool.commit(in, envelope_for(in.id, "a@example.test")));
  EXPECT_EQ(slurp(dir / "msg" / in.id), "new\n");
  fs::remove_all(dir);
}

// The Maildir side of group commit (deliver/maildir.h).
TEST(MaildirGroupCommit, DeliveriesShareSyncsAndEndInNew) {
  fs::path dir = fresh_dir("maildir");
  fs::create_directories(dir);
  std::ofstream(dir / "message") << "Subject: hi\n\nbody\n";
  int fd = ::open((dir / "message").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::atomic<int> syncs{0};
  std::mutex mutex;
  std::vector<tern::deliver::DeliveryResult> results;
  {
    tern::deliver::MaildirWriter writer([&](int) -> std::error_code {
      ++syncs;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      return {};
    });
    for (int i = 0; i < 60; ++i) {
      std::string box = "box" + std::to_string(i % 3);
      writer.deliver(dir / box / "Maildir", fd, "s@example.org", box + "@example.test", "mx",
                     [&](tern::deliver::DeliveryResult r) {
                       std::lock_guard lock(mutex);
                       results.push_back(std::move(r));
                     });
    }
  }
  ::close(fd);
  ASSERT_EQ(results.size(), 60u);
  for (const auto& r : results) {
    ASSERT_EQ(r.outcome, tern::deliver::Outcome::delivered) << r.detail;
    std::string box = fs::path(r.path).parent_path().parent_path().parent_path().filename().string();
    EXPECT_EQ(slurp(r.path),
              "Return-Path: <s@example.org>\nDelivered-To: " + box + "@example.test\nSubject: hi\n\nbody\n");
  }
  for (int b = 0; b < 3; ++b) {
    fs::path box = dir / ("box" + std::to_string(b)) / "Maildir";
    EXPECT_EQ(count_files(box / "new"), 20u);
    EXPECT_EQ(count_files(box / "tmp"), 0u);
  }
  EXPECT_LT(syncs.load(), 60) << "one filesystem: two syncs per batch, not per delivery";
  EXPECT_EQ(syncs.load() % 2, 0);
  fs::remove_all(dir);
}

TEST(MaildirGroupCommit, AFailedSyncLeavesNothingAndIsTemporary) {
  for (int failing_sync : {1, 2}) {  // before the links into new/, or after
    fs::path dir = fresh_dir("maildir-fail" + std::to_string(failing_sync));
    fs::create_directories(dir);
    std::ofstream(dir / "message") << "Subject: hi\n\nbody\n";
    int fd = ::open((dir / "message").c_str(), O_RDONLY);
    std::atomic<int> calls{0};
    std::vector<tern::deliver::DeliveryResult> results;
    std::mutex mutex;
    {
      tern::deliver::MaildirWriter writer([&](int) -> std::error_code {
        return ++calls == failing_sync ? std::make_error_code(std::errc::io_error) : std::error_code{};
      });
      writer.deliver(dir / "Maildir", fd, "s@example.org", "a@example.test", "mx",
                     [&](tern::deliver::DeliveryResult r) {
                       std::lock_guard lock(mutex);
                       results.push_back(std::move(r));
                     });
    }
    ::close(fd);
    ASSERT_EQ(results.size(), 1u);
    EXPECT_EQ(results[0].outcome, tern::deliver::Outcome::temporary);
    EXPECT_NE(results[0].detail.find("cannot sync"), std::string::npos) << results[0].detail;
    EXPECT_EQ(count_files(dir / "Maildir" / "new"), 0u);
    EXPECT_EQ(count_files(dir / "Maildir" / "tmp"), 0u);
    fs::remove_all(dir);
  }
}
