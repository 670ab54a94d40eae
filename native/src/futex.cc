// Futex wait/wake on a 32-bit word inside a SharedArrayBuffer, across processes.
//
// V8's Atomics.wait/notify keep their waiter lists inside the process, so they never wake a
// waiter in another process. These use futex(2) without FUTEX_PRIVATE_FLAG: the kernel keys a
// shared futex on the page's backing object, so a wake in one process reaches a wait in every
// process that maps the same segment.
//
// futexWait must never block the JS thread, so each pending wait sits on a thread of a small
// per-environment pool (not libuv's pool: a wait may last forever and would starve fs/dns work).
// The thread delivers the result through a thread-safe function, which resolves the promise on
// the calling thread's loop. Threads are reused while waits keep coming and exit after 30 s idle.
//
// Waits with a long or no timeout (the ring's) go to a per-word watcher instead: a thread that
// stays parked in FUTEX_WAIT on the word for a while after its wait settles, so the next wait is
// armed with a compare-and-swap rather than a hand-off that wakes a pool thread (one thread
// wake-up per settled wait instead of two). An idle watcher that absorbs a wake passes it on
// (FUTEX_WAKE 1), so it cannot steal a wake meant for another waiter; futexWake's count may
// include it. A watcher keeps its buffer's memory alive until it exits (kWatcherLinger idle).
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "addon.h"

namespace ogurpchik {
namespace {

constexpr auto kIdleThreadLifetime = std::chrono::seconds(30);
// While stopping, wake the words of pending waits this often: a thread may be between checking
// the stop flag and entering FUTEX_WAIT, where one wake would be lost.
constexpr auto kStopRewakeInterval = std::chrono::milliseconds(5);
// A word's watcher thread stays parked on the word this long after its last wait settles, so the
// next wait on the word is armed with one atomic store instead of a thread hand-off.
constexpr auto kWatcherLinger = std::chrono::seconds(1);
// While idle, a watcher sleeps in slices this long: a wait armed meanwhile with a finite timeout
// is noticed within one slice, so only waits with a long (or no) timeout use watchers.
constexpr long kWatcherSliceNs = 20 * 1000 * 1000;
constexpr double kWatcherMinTimeoutMs = 2000;

long Futex(int32_t* word, int op, int32_t value, const timespec* timeout) {
  return syscall(SYS_futex, word, op, value, timeout, nullptr, FUTEX_BITSET_MATCH_ANY);
}

int WakeWord(int32_t* word, int count) {
  return static_cast<int>(Futex(word, FUTEX_WAKE, count, nullptr));
}

struct Deadline {
  bool infinite = true;
  timespec at{};  // CLOCK_MONOTONIC, absolute: an EINTR retry keeps the original deadline
};

Deadline DeadlineAfter(double ms) {
  Deadline d;
  if (std::isinf(ms) || ms > 1e12) return d;  // > 30 years: no deadline
  d.infinite = false;
  clock_gettime(CLOCK_MONOTONIC, &d.at);
  long long ns = static_cast<long long>(ms * 1e6);
  d.at.tv_sec += ns / 1000000000LL;
  d.at.tv_nsec += ns % 1000000000LL;
  if (d.at.tv_nsec >= 1000000000L) {
    d.at.tv_sec += 1;
    d.at.tv_nsec -= 1000000000L;
  }
  return d;
}

enum class Outcome { kWoken, kNotEqual, kTimedOut, kCancelled, kFailed };

struct WaitResult {
  Outcome outcome;
  int err = 0;  // for kFailed
};

// Sleeps until woken, the word no longer holds `expected`, the deadline passes, or `cancel`
// turns true (checked on every return from the kernel). A wake may be spurious, as with any
// futex: callers re-check their condition.
WaitResult WaitOnWord(int32_t* word, int32_t expected, const Deadline& deadline,
                      const std::atomic<bool>* cancel) {
  for (;;) {
    if (cancel != nullptr && cancel->load(std::memory_order_acquire)) return {Outcome::kCancelled};
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline (plain FUTEX_WAIT's is relative).
    long r = Futex(word, FUTEX_WAIT_BITSET, expected, deadline.infinite ? nullptr : &deadline.at);
    if (r == 0) return {Outcome::kWoken};
    switch (errno) {
      case EAGAIN:
        return {Outcome::kNotEqual};
      case ETIMEDOUT:
        return {Outcome::kTimedOut};
      case EINTR:
        continue;
      default:
        return {Outcome::kFailed, errno};
    }
  }
}

struct Word {
  std::shared_ptr<v8::BackingStore> store;
  int32_t* address;
};

// Reads { buffer: SharedArrayBuffer, byteOffset } into an aligned word address.
Word WordOption(Napi::Object options) {
  Napi::Env env = options.Env();
  v8::Local<v8::Value> buffer = ToV8(options.Get("buffer"));
  if (!buffer->IsSharedArrayBuffer()) {
    throw InvalidArgument(env, "option 'buffer' must be a SharedArrayBuffer");
  }
  std::shared_ptr<v8::BackingStore> store = buffer.As<v8::SharedArrayBuffer>()->GetBackingStore();
  if (store->ByteLength() < 4) throw InvalidArgument(env, "option 'buffer' is shorter than one word");
  double offset = IntegerOption(options, "byteOffset", 0, static_cast<double>(store->ByteLength() - 4), true);
  if (std::fmod(offset, 4) != 0) throw InvalidArgument(env, "option 'byteOffset' must be a multiple of 4");
  auto* address = reinterpret_cast<int32_t*>(static_cast<char*>(store->Data()) + static_cast<size_t>(offset));
  return {std::move(store), address};
}

int32_t ExpectedOption(Napi::Object options) {
  // Accept the int32 and uint32 spellings of a word (0xffffffff and -1 are the same bits).
  double n = IntegerOption(options, "expected", -2147483648.0, 4294967295.0, true);
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<int64_t>(n)));
}

double TimeoutOption(Napi::Object options) {
  Napi::Value value = options.Get("timeoutMs");
  if (value.IsUndefined()) return INFINITY;
  double ms = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : NAN;
  if (!(ms >= 0)) throw InvalidArgument(options.Env(), "option 'timeoutMs' must be a number >= 0 or Infinity");
  return ms;
}

const char* kResultOk = "ok";
const char* kResultNotEqual = "not-equal";
const char* kResultTimedOut = "timed-out";

}  // namespace

struct WaitJob {
  std::shared_ptr<v8::BackingStore> store;  // keeps the mapping alive while a thread sleeps on it
  int32_t* word;
  int32_t expected;
  Deadline deadline;
  napi_deferred deferred;
  WaitResult result{Outcome::kWoken};
};

// A thread that stays parked in FUTEX_WAIT on one word between waits. `slot` is the arming
// handshake: nullptr idle; a WaitJob* armed by the JS thread (not yet claimed); kBusy claimed by
// the watcher, which then owns the job; kDead the thread is leaving and takes no more jobs.
// Whoever moves `slot` away from a job pointer owns that job.
struct Watcher {
  std::shared_ptr<v8::BackingStore> store;  // keeps the mapping alive while the thread sleeps on it
  int32_t* word;
  std::atomic<WaitJob*> slot{nullptr};
};

WaitJob* const kBusy = reinterpret_cast<WaitJob*>(uintptr_t{1});
WaitJob* const kDead = reinterpret_cast<WaitJob*>(uintptr_t{2});

bool IsJob(WaitJob* j) {
  return j != nullptr && j != kBusy && j != kDead;
}

class Waiters : public std::enable_shared_from_this<Waiters> {
 public:
  enum class Arm { kArmed, kSettled, kNone };

  // JS thread. Hands `job` to the word's watcher (starting one if there is none): kArmed, the
  // watcher owns it; kSettled, the word changed while arming and the caller keeps the job and
  // settles it at once; kNone, the watcher is busy with another wait or unavailable: use Submit.
  Arm TryArm(WaitJob* job) {
    std::shared_ptr<Watcher> w;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return Arm::kNone;
      auto it = watchers_.find(job->word);
      if (it == watchers_.end() || it->second->slot.load(std::memory_order_acquire) == kDead) {
        w = std::make_shared<Watcher>();
        w->store = job->store;
        w->word = job->word;
        w->slot.store(job, std::memory_order_relaxed);  // armed from the start
        try {
          std::thread([self = shared_from_this(), w] { self->RunWatcher(w); }).detach();
        } catch (const std::system_error&) {
          return Arm::kNone;
        }
        threads_++;
        watchers_[job->word] = w;
        return Arm::kArmed;
      }
      w = it->second;
    }
    WaitJob* idle = nullptr;
    if (!w->slot.compare_exchange_strong(idle, job, std::memory_order_seq_cst)) return Arm::kNone;
    // The watcher may be asleep on an older value of the word, read before this store: a change
    // since our caller's check would then wake nobody. Look again; take the job back if so.
    if (__atomic_load_n(job->word, __ATOMIC_SEQ_CST) != job->expected) {
      WaitJob* armed = job;
      if (w->slot.compare_exchange_strong(armed, nullptr, std::memory_order_seq_cst)) return Arm::kSettled;
    }
    return Arm::kArmed;
  }

  napi_threadsafe_function tsfn = nullptr;
  // Waits submitted and not yet settled; JS thread only. The thread-safe function holds the
  // loop open exactly while this is non-zero, like a timer would.
  size_t pending = 0;

  void Submit(WaitJob* job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(job);
      // Every queued job needs a thread of its own (a wait can last forever): wake an idle one,
      // or start one when the idle threads are already spoken for by earlier queued jobs.
      if (queue_.size() <= idle_) {
        work_cv_.notify_one();
        return;
      }
      threads_++;
    }
    try {
      std::thread([self = shared_from_this()] { self->Run(); }).detach();
    } catch (const std::system_error&) {
      // No thread for this job: take it back so Stop() does not wait for a thread that never ran.
      std::lock_guard<std::mutex> lock(mu_);
      threads_--;
      queue_.erase(std::find(queue_.begin(), queue_.end(), job));
      throw;
    }
  }

  void Stop() {
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    stop_flag_.store(true, std::memory_order_release);
    for (WaitJob* job : queue_) delete job;
    queue_.clear();
    work_cv_.notify_all();
    while (threads_ > 0) {
      // A spurious wake for anyone else sleeping on the same word; futex users tolerate those.
      for (WaitJob* job : active_) WakeWord(job->word, INT_MAX);
      for (auto& entry : watchers_) WakeWord(entry.first, INT_MAX);
      exit_cv_.wait_for(lock, kStopRewakeInterval);
    }
  }

 private:
  // Settles a job the watcher owns, on the JS thread.
  void Deliver(WaitJob* job) {
    if (stop_flag_.load(std::memory_order_acquire) ||
        napi_call_threadsafe_function(tsfn, job, napi_tsfn_nonblocking) != napi_ok) {
      delete job;
    }
  }

  void RunWatcher(std::shared_ptr<Watcher> w) {
    auto linger_end = std::chrono::steady_clock::now() + kWatcherLinger;
    int passed = 0;  // idle wakes passed on to another waiter since the last wait
    for (;;) {
      if (stop_flag_.load(std::memory_order_acquire)) break;
      WaitJob* job = w->slot.load(std::memory_order_seq_cst);
      if (IsJob(job)) {
        if (!w->slot.compare_exchange_strong(job, kBusy, std::memory_order_seq_cst)) continue;  // taken back
        job->result = WaitOnWord(w->word, job->expected, job->deadline, &stop_flag_);
        if (job->result.outcome == Outcome::kCancelled) {
          delete job;
          break;
        }
        w->slot.store(nullptr, std::memory_order_seq_cst);
        Deliver(job);
        linger_end = std::chrono::steady_clock::now() + kWatcherLinger;
        passed = 0;
        continue;
      }
      if (std::chrono::steady_clock::now() >= linger_end) {
        if (Retire(w)) return;
        continue;
      }
      // Idle: sleep on the word's current value. The word is read before the slot, so a wait
      // armed after the slot read sees (in TryArm's second look) any change made after this read,
      // and any change after it either fails the kernel's comparison or wakes us.
      int32_t value = __atomic_load_n(w->word, __ATOMIC_SEQ_CST);
      if (w->slot.load(std::memory_order_seq_cst) != nullptr) continue;
      timespec until;
      clock_gettime(CLOCK_MONOTONIC, &until);
      until.tv_nsec += kWatcherSliceNs;
      if (until.tv_nsec >= 1000000000L) {
        until.tv_sec += 1;
        until.tv_nsec -= 1000000000L;
      }
      if (Futex(w->word, FUTEX_WAIT_BITSET, value, &until) != 0) continue;  // changed, timed out, EINTR
      // Woken while idle. If a wait was armed meanwhile, the wake may have been meant for it:
      // settle it 'ok' (waits may wake spuriously). Otherwise it may have been meant for another
      // waiter on the word: pass it on. Idle watchers in other processes or threads may pass it
      // back and forth, so one that passes a wake to somebody twice without a wait in between
      // leaves: the chain ends, at a real waiter or at nobody.
      job = w->slot.load(std::memory_order_seq_cst);
      if (IsJob(job)) {
        if (w->slot.compare_exchange_strong(job, kBusy, std::memory_order_seq_cst)) {
          job->result = {Outcome::kWoken};
          w->slot.store(nullptr, std::memory_order_seq_cst);
          Deliver(job);
          linger_end = std::chrono::steady_clock::now() + kWatcherLinger;
          passed = 0;
        }
        continue;
      }
      if (WakeWord(w->word, 1) > 0 && ++passed >= 2 && Retire(w)) return;
    }
    Retire(w, true);
  }

  // Ends a watcher thread unless a wait was armed on it meanwhile (returns false then). When
  // stopping, an armed job is dropped with its environment.
  bool Retire(const std::shared_ptr<Watcher>& w, bool stopping = false) {
    std::lock_guard<std::mutex> lock(mu_);
    WaitJob* job = w->slot.load(std::memory_order_seq_cst);
    for (;;) {
      if (IsJob(job) && stopping) {
        if (w->slot.compare_exchange_strong(job, kDead, std::memory_order_seq_cst)) {
          delete job;
          break;
        }
        continue;
      }
      if (job == kBusy || job == nullptr) {
        if (w->slot.compare_exchange_strong(job, kDead, std::memory_order_seq_cst)) break;
        continue;
      }
      if (job == kDead) break;
      return false;  // armed: keep going
    }
    auto it = watchers_.find(w->word);
    if (it != watchers_.end() && it->second == w) watchers_.erase(it);
    threads_--;
    exit_cv_.notify_all();
    return true;
  }

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (queue_.empty() && !stopping_) {
        idle_++;
        bool got = work_cv_.wait_for(lock, kIdleThreadLifetime, [this] { return !queue_.empty() || stopping_; });
        idle_--;
        if (!got) break;
      }
      if (stopping_) break;
      WaitJob* job = queue_.front();
      queue_.pop_front();
      active_.insert(job);
      lock.unlock();
      job->result = WaitOnWord(job->word, job->expected, job->deadline, &stop_flag_);
      lock.lock();
      active_.erase(job);
      if (stopping_) {
        delete job;  // its environment is going away; nobody is left to settle the promise for
        break;
      }
      lock.unlock();
      // Stop() cannot finish while this thread counts in threads_, so the function is alive.
      if (napi_call_threadsafe_function(tsfn, job, napi_tsfn_nonblocking) != napi_ok) delete job;
      lock.lock();
    }
    threads_--;
    exit_cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable exit_cv_;
  std::deque<WaitJob*> queue_;
  std::unordered_set<WaitJob*> active_;
  std::unordered_map<int32_t*, std::shared_ptr<Watcher>> watchers_;
  size_t threads_ = 0;
  size_t idle_ = 0;
  bool stopping_ = false;
  std::atomic<bool> stop_flag_{false};  // stopping_, readable without the lock
};

namespace {

// Runs on the JS thread of the environment that submitted the job (env is null when the
// thread-safe function is being torn down with jobs still queued).
void SettleOnJsThread(napi_env raw_env, napi_value /*js_callback*/, void* context, void* data) {
  std::unique_ptr<WaitJob> job(static_cast<WaitJob*>(data));
  if (raw_env == nullptr) return;
  Waiters& waiters = **static_cast<std::shared_ptr<Waiters>*>(context);
  if (--waiters.pending == 0) napi_unref_threadsafe_function(raw_env, waiters.tsfn);
  Napi::Env env(raw_env);
  Napi::HandleScope scope(env);
  try {
    switch (job->result.outcome) {
      case Outcome::kFailed:
        napi_reject_deferred(env, job->deferred, ErrnoError(env, job->result.err, "futex").Value());
        return;
      case Outcome::kTimedOut:
        napi_resolve_deferred(env, job->deferred, Napi::String::New(env, kResultTimedOut));
        return;
      default:
        // futexWait() saw the word equal to `expected` before handing over, so a thread that
        // finds it changed (EAGAIN) was in effect woken: report 'ok', as Atomics.waitAsync would.
        napi_resolve_deferred(env, job->deferred, Napi::String::New(env, kResultOk));
        return;
    }
  } catch (const Napi::Error& error) {
    napi_reject_deferred(env, job->deferred, error.Value());
  }
}

}  // namespace

std::shared_ptr<Waiters> CreateWaiters(Napi::Env env) {
  auto waiters = std::make_shared<Waiters>();
  // The thread-safe function's context owns a reference, so the pool outlives the function.
  auto* context = new std::shared_ptr<Waiters>(waiters);
  napi_status status = napi_create_threadsafe_function(
      env, nullptr, nullptr, Napi::String::New(env, "ogurpchik:futexWait"), 0, 1,
      nullptr, [](napi_env, void*, void* hint) { delete static_cast<std::shared_ptr<Waiters>*>(hint); },
      context, SettleOnJsThread, &waiters->tsfn);
  if (status != napi_ok) {
    delete context;
    throw Napi::Error::New(env, "ogurpchik: cannot create the futex wait dispatcher");
  }
  // Idle until a wait is pending: a loaded addon alone must not keep the process alive.
  napi_unref_threadsafe_function(env, waiters->tsfn);
  return waiters;
}

void StopWaiters(Waiters& waiters) {
  waiters.Stop();
}

// futexWake({ buffer, byteOffset, count? = Infinity }) -> number of waiters woken (any process)
Napi::Value FutexWake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "futexWake");
  Word word = WordOption(options);
  double count = IntegerOption(options, "count", 0, INFINITY, false, INT_MAX);
  int woken = WakeWord(word.address, count > INT_MAX ? INT_MAX : static_cast<int>(count));
  if (woken < 0) throw ErrnoError(env, errno, "futex");
  return Napi::Number::New(env, woken);
}

// futexWait({ buffer, byteOffset, expected, timeoutMs? = Infinity })
//   -> Promise<'ok' | 'not-equal' | 'timed-out'>; the JS thread never blocks.
Napi::Value FutexWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "futexWait");
  Word word = WordOption(options);
  int32_t expected = ExpectedOption(options);
  double timeout_ms = TimeoutOption(options);

  napi_deferred deferred;
  napi_value promise;
  if (napi_create_promise(env, &deferred, &promise) != napi_ok) {
    throw Napi::Error::New(env, "ogurpchik: napi_create_promise failed");
  }
  // Settle the cheap cases here, without a thread hop.
  if (__atomic_load_n(word.address, __ATOMIC_SEQ_CST) != expected) {
    napi_resolve_deferred(env, deferred, Napi::String::New(env, kResultNotEqual));
    return Napi::Value(env, promise);
  }
  if (timeout_ms == 0) {
    napi_resolve_deferred(env, deferred, Napi::String::New(env, kResultTimedOut));
    return Napi::Value(env, promise);
  }

  Waiters& waiters = *StateOf(env).waiters;
  auto job = std::make_unique<WaitJob>(WaitJob{std::move(word.store), word.address, expected, DeadlineAfter(timeout_ms), deferred});
  if (waiters.pending++ == 0) napi_ref_threadsafe_function(env, waiters.tsfn);
  if (timeout_ms >= kWatcherMinTimeoutMs) {
    switch (waiters.TryArm(job.get())) {
      case Waiters::Arm::kArmed:
        job.release();  // the watcher owns it now
        return Napi::Value(env, promise);
      case Waiters::Arm::kSettled:
        // The word changed just now: as for a thread that finds it changed, report 'ok'.
        if (--waiters.pending == 0) napi_unref_threadsafe_function(env, waiters.tsfn);
        napi_resolve_deferred(env, deferred, Napi::String::New(env, kResultOk));
        return Napi::Value(env, promise);
      case Waiters::Arm::kNone:
        break;
    }
  }
  try {
    waiters.Submit(job.get());
    job.release();  // the waiter thread owns it now
  } catch (const std::system_error& error) {
    if (--waiters.pending == 0) napi_unref_threadsafe_function(env, waiters.tsfn);
    napi_reject_deferred(env, deferred, ErrnoError(env, error.code().value(), "pthread_create").Value());
  }
  return Napi::Value(env, promise);
}

// futexWaitSync({ buffer, byteOffset, expected, timeoutMs? }) -> 'ok' | 'not-equal' | 'timed-out'
// Blocks the calling thread (like Atomics.wait): for tests and dedicated threads only.
Napi::Value FutexWaitSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "futexWaitSync");
  Word word = WordOption(options);
  int32_t expected = ExpectedOption(options);
  WaitResult r = WaitOnWord(word.address, expected, DeadlineAfter(TimeoutOption(options)), nullptr);
  switch (r.outcome) {
    case Outcome::kNotEqual:
      return Napi::String::New(env, kResultNotEqual);
    case Outcome::kTimedOut:
      return Napi::String::New(env, kResultTimedOut);
    case Outcome::kFailed:
      throw ErrnoError(env, r.err, "futex");
    default:
      return Napi::String::New(env, kResultOk);
  }
}

}  // namespace ogurpchik
