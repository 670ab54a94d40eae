// AF_VSOCK sockets for the vsock() transport, with no call into JS from any native callback.
//
// Node cannot wrap an AF_VSOCK fd (net.Socket throws ERR_INVALID_FD_TYPE). An earlier design
// polled the fd with a uv_poll_t and called JS from the poll callback; when a worker exited with
// such a stream open, node-addon-api built an Error while the environment refused calls into JS
// and the whole process aborted. So here native code never calls JS at all:
//
// Each environment has one relay thread (the "hub") that owns every vsock fd of the environment
// and bridges each connection to one end of an AF_UNIX socketpair. JS gets the other end: a plain
// Unix stream socket that net.Socket wraps, so a vsock connection runs on Node's own stream code.
// Whatever the hub must tell JS travels as bytes on those sockets:
//   - every relayed stream starts with a 4-byte little-endian status: 0 when connected, else the
//     errno of a failed connect (and the stream ends there);
//   - a listener announces each accepted connection on its control socket as a 12-byte record
//     (u32 LE: the new stream's JS-side fd, the peer's CID, the peer's port). JS claims the fd with
//     vsockTakeAccepted() before wrapping it, so an fd the hub closed meanwhile (its listener
//     closing) is never touched; unclaimed fds are the hub's to close.
// The environment's cleanup hook stops and joins the hub and closes every fd it still owns; the
// JS-side fds belong to Node's handles, which the environment closes itself.
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "addon.h"

namespace ogurpchik {
namespace {

using Clock = std::chrono::steady_clock;

// Bytes buffered per direction of a relay: one read(2) and one write(2) move at most this much.
constexpr size_t kRelayBuffer = 64 * 1024;
// Connections accepted per listener per poll round, so one busy listener cannot starve relays.
constexpr int kAcceptBatch = 32;
// Announcements the hub holds for a listener whose JS side does not read its control socket; past
// this it stops accepting (the kernel's backlog queues further clients) until JS catches up.
constexpr size_t kMaxPendingAnnouncements = 256;
// After an accept error such as EMFILE the listening fd stays readable: wait before retrying.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);
// The hub thread exits after this long with nothing to relay; the next stream starts a new one.
constexpr auto kIdleExit = std::chrono::seconds(5);
constexpr size_t kStatusBytes = 4;
constexpr size_t kAnnouncementBytes = 12;

void PutU32(char* at, uint32_t v) {
  for (int i = 0; i < 4; i++) at[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

void CloseFd(int fd) {
  if (fd >= 0) close(fd);  // EINTR on Linux still closes the fd: never retry
}

// One direction of a relay: bytes read from its source, not yet written to its sink.
struct Pipe {
  std::unique_ptr<char[]> data;  // allocated on first use: an idle connection holds no buffer
  size_t begin = 0;
  size_t end = 0;
  bool eof = false;   // the source said end-of-file
  bool shut = false;  // ...and that was passed on: shutdown(sink, SHUT_WR)

  char* Buffer() {
    if (!data) data.reset(new char[kRelayBuffer]);
    return data.get();
  }
  // Starts the stream toward JS with the status word (0: connected).
  void PutStatusOk() {
    PutU32(Buffer(), 0);
    end = kStatusBytes;
  }
  size_t pending() const { return end - begin; }
  size_t room() const { return kRelayBuffer - end; }
  void Compact() {
    if (begin == end) {
      begin = end = 0;
    } else if (begin > 0 && room() < kRelayBuffer / 4) {
      memmove(Buffer(), Buffer() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
  }
};

// A connection (vsock, or any connected stream socket handed to relayFd) bridged to `local`, the
// hub's end of a socketpair whose other end JS holds.
struct Relay {
  int net = -1;
  int local = -1;
  Pipe up;    // local -> net: what JS writes
  Pipe down;  // net -> local: what JS reads, after the status word
  bool net_hup = false;
  bool local_hup = false;
  bool connecting = false;
  Clock::time_point deadline{};
  bool done = false;

  ~Relay() {
    CloseFd(net);
    CloseFd(local);
  }
};

// A listening vsock socket and its control socket (the hub's end; JS reads the other).
struct Listener {
  uint64_t id = 0;
  int fd = -1;
  int control = -1;
  std::vector<char> announcements;  // records not yet written to `control`
  Clock::time_point resume_at{};    // accept backoff
  bool done = false;

  ~Listener() {
    CloseFd(fd);
    CloseFd(control);
  }
};

// Reads from `fd` into `pipe` until it would block, is full or ends. False on a hard error.
bool ReadInto(int fd, Pipe& pipe) {
  pipe.Compact();
  while (!pipe.eof && pipe.room() > 0) {
    ssize_t n = read(fd, pipe.Buffer() + pipe.end, pipe.room());
    if (n > 0) {
      pipe.end += static_cast<size_t>(n);
    } else if (n == 0) {
      pipe.eof = true;
    } else if (errno == EINTR) {
      continue;
    } else {
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
  }
  return true;
}

// Writes what `pipe` holds to `fd` until it would block. False on a hard error, or when the sink
// has hung up and still cannot take bytes (nothing will ever drain them).
bool WriteFrom(int fd, Pipe& pipe, bool sink_hup) {
  while (pipe.pending() > 0) {
    ssize_t n = send(fd, pipe.Buffer() + pipe.begin, pipe.pending(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      pipe.begin += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return !sink_hup;
    } else {
      return false;
    }
  }
  pipe.begin = pipe.end = 0;
  return true;
}

int SocketError(int fd) {
  int err = 0;
  socklen_t length = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &length) != 0) return errno;
  return err;
}

}  // namespace

// One per environment, created on first use. The JS thread hands it relays and listeners; its
// thread owns them from then on. Only the counters and the hand-off queues are shared.
class VsockHub {
 public:
  VsockHub() = default;
  VsockHub(const VsockHub&) = delete;
  VsockHub& operator=(const VsockHub&) = delete;
  ~VsockHub() { Stop(); }

  // JS thread. Takes `relay` (and its fds): 0, or the errno of why not (the hub is stopping, no
  // thread could start), leaving the relay with the caller.
  int Add(std::unique_ptr<Relay>& relay) {
    std::lock_guard<std::mutex> lock(mu_);
    if (int err = Wake(lock)) return err;
    new_relays_.push_back(std::move(relay));
    relays_count_++;
    return 0;
  }

  int Add(std::unique_ptr<Listener>& listener) {
    std::lock_guard<std::mutex> lock(mu_);
    if (int err = Wake(lock)) return err;
    listener->id = ++last_listener_id_;
    new_listeners_.push_back(std::move(listener));
    listeners_count_++;
    return 0;
  }

  // JS thread: claims an accepted stream's JS-side fd; false when it is not (or no longer) on offer.
  bool TakeAccepted(int fd) {
    std::lock_guard<std::mutex> lock(mu_);
    return unclaimed_.erase(fd) == 1;
  }

  // Cleanup hook (JS thread, no JS running): stops and joins the thread, closes every fd it owns.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stopped_ = true;
      if (wake_fd_ >= 0) {
        uint64_t one = 1;
        (void)!write(wake_fd_, &one, sizeof(one));
      }
    }
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    new_relays_.clear();
    new_listeners_.clear();
    for (auto& [fd, listener] : unclaimed_) CloseFd(fd);
    unclaimed_.clear();
    CloseFd(wake_fd_);
    wake_fd_ = -1;
    relays_count_ = listeners_count_ = 0;
  }

  struct Stats {
    size_t relays;
    size_t listeners;
    size_t unclaimed;
    bool running;
  };

  Stats GetStats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {relays_count_, listeners_count_, unclaimed_.size(), running_};
  }

 private:
  // Starts the thread if it is not running, and nudges it to pick up new work: 0, or an errno.
  int Wake(const std::lock_guard<std::mutex>&) {
    if (stopped_) return ECANCELED;
    if (wake_fd_ < 0) {
      wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (wake_fd_ < 0) return errno;
    }
    if (!running_) {
      // A previous thread left after idling (it cleared running_ as its last act under mu_).
      if (thread_.joinable()) thread_.join();
      try {
        thread_ = std::thread([this] { Run(); });
      } catch (const std::system_error& e) {
        return e.code().value() != 0 ? e.code().value() : EAGAIN;
      }
      running_ = true;
    }
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
    return 0;
  }

  void Run() {
    std::vector<std::unique_ptr<Relay>> relays;
    std::vector<std::unique_ptr<Listener>> listeners;
    std::vector<pollfd> fds;
    auto idle_since = Clock::now();
    for (;;) {
      int wake_fd;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopped_) break;
        for (auto& r : new_relays_) relays.push_back(std::move(r));
        for (auto& l : new_listeners_) listeners.push_back(std::move(l));
        new_relays_.clear();
        new_listeners_.clear();
        relays_count_ = relays.size();
        listeners_count_ = listeners.size();
        auto now = Clock::now();
        if (!relays.empty() || !listeners.empty()) {
          idle_since = now;
        } else if (now - idle_since >= kIdleExit) {
          running_ = false;  // Wake() joins this thread before starting another
          return;
        }
        wake_fd = wake_fd_;
      }

      auto now = Clock::now();
      auto next = idle_since + kIdleExit;
      fds.clear();
      fds.push_back({wake_fd, POLLIN, 0});
      for (auto& r : relays) {
        if (r->connecting) {
          fds.push_back({r->net, POLLOUT, 0});
          fds.push_back({r->local, 0, 0});  // a hang-up: JS gave up on the connect
          if (r->deadline < next) next = r->deadline;
          continue;
        }
        short net_events = (r->down.room() > 0 && !r->down.eof ? POLLIN : 0) | (r->up.pending() > 0 ? POLLOUT : 0);
        short local_events = (r->up.room() > 0 && !r->up.eof ? POLLIN : 0) | (r->down.pending() > 0 ? POLLOUT : 0);
        // poll() always reports a hang-up, so an fd known to have hung up is only watched while
        // there is something to read from it; else it would wake this loop forever. (Writes to it
        // are tried after every round instead; they fail at once.)
        fds.push_back({r->net_hup && !(net_events & POLLIN) ? -1 : r->net, net_events, 0});
        fds.push_back({r->local_hup && !(local_events & POLLIN) ? -1 : r->local, local_events, 0});
      }
      for (auto& l : listeners) {
        bool accepting = now >= l->resume_at && l->announcements.size() < kMaxPendingAnnouncements * kAnnouncementBytes;
        if (!accepting && l->resume_at > now && l->resume_at < next) next = l->resume_at;
        fds.push_back({accepting ? l->fd : -1, POLLIN, 0});
        fds.push_back({l->control, static_cast<short>(POLLIN | (l->announcements.empty() ? 0 : POLLOUT)), 0});
      }
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
      int timeout = wait < 0 ? 0 : wait > 60000 ? 60000 : static_cast<int>(wait);
      if (poll(fds.data(), fds.size(), timeout) < 0) {
        if (errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(10));  // ENOMEM: retry
        continue;
      }
      if (fds[0].revents & POLLIN) {
        uint64_t count;
        (void)!read(wake_fd, &count, sizeof(count));
      }

      now = Clock::now();
      size_t i = 1;
      for (auto& r : relays) {
        Service(*r, fds[i].revents, fds[i + 1].revents, now);
        i += 2;
      }
      for (auto& l : listeners) {
        Service(*l, fds[i].revents, fds[i + 1].revents, now);
        i += 2;
      }
      relays.erase(std::remove_if(relays.begin(), relays.end(), [](auto& r) { return r->done; }), relays.end());
      for (auto& l : listeners) {
        if (l->done) Forget(*l);
      }
      listeners.erase(std::remove_if(listeners.begin(), listeners.end(), [](auto& l) { return l->done; }), listeners.end());
    }
    // Stopping: the destructors close every fd this thread owns; Stop() closes the unclaimed ones.
    for (auto& l : listeners) Forget(*l);
  }

  void Service(Relay& r, short net_rev, short local_rev, Clock::time_point now) {
    if (r.connecting) {
      if (local_rev & (POLLHUP | POLLERR)) {
        r.done = true;  // JS closed its end: nobody wants this connection
        return;
      }
      int err = 0;
      if (net_rev & (POLLOUT | POLLERR | POLLHUP)) {
        err = SocketError(r.net);
      } else if (now >= r.deadline) {
        err = ETIMEDOUT;
      } else {
        return;
      }
      r.connecting = false;
      if (err != 0) {
        // The socketpair is fresh: four bytes always fit, so this send cannot block.
        char status[kStatusBytes];
        PutU32(status, static_cast<uint32_t>(err));
        (void)!send(r.local, status, sizeof(status), MSG_NOSIGNAL | MSG_DONTWAIT);
        r.done = true;
        return;
      }
      r.down.PutStatusOk();
      net_rev = 0;
      local_rev = POLLOUT;
    }

    // POLLNVAL: an fd closed behind the hub's back (a relayFd caller's misuse). Its number may
    // already name another file, so it is dropped, not closed.
    if (net_rev & POLLNVAL) r.net = -1;
    if (local_rev & POLLNVAL) r.local = -1;
    if ((net_rev | local_rev) & POLLNVAL) {
      r.done = true;
      return;
    }
    if (net_rev & POLLHUP) r.net_hup = true;
    if (local_rev & POLLHUP) r.local_hup = true;
    bool ok = true;
    if ((net_rev & POLLERR) && SocketError(r.net) != 0) ok = false;
    if ((local_rev & POLLERR) && SocketError(r.local) != 0) ok = false;
    size_t down_before = r.down.pending();
    size_t up_before = r.up.pending();
    if (ok && (net_rev & (POLLIN | POLLHUP | POLLERR))) ok = ReadInto(r.net, r.down);
    if (ok && (local_rev & (POLLIN | POLLHUP | POLLERR))) ok = ReadInto(r.local, r.up);
    // Write when the sink said it can take bytes, when bytes just arrived (most often the sink has
    // room, and this saves a poll round), or when the sink hung up and is no longer polled.
    auto should_write = [](const Pipe& p, size_t before, short sink_rev, bool sink_hup) {
      return p.pending() > 0 && (p.pending() > before || (sink_rev & (POLLOUT | POLLERR | POLLHUP)) || sink_hup);
    };
    if (ok && should_write(r.down, down_before, local_rev, r.local_hup)) ok = WriteFrom(r.local, r.down, r.local_hup);
    if (ok && should_write(r.up, up_before, net_rev, r.net_hup)) ok = WriteFrom(r.net, r.up, r.net_hup);
    if (!ok) {
      r.done = true;  // closing both ends: the other side sees the connection end (or reset)
      return;
    }
    // Half-closes pass through: the sink is told end-of-file once everything before it is out.
    if (r.down.eof && r.down.pending() == 0 && !r.down.shut) {
      shutdown(r.local, SHUT_WR);
      r.down.shut = true;
    }
    if (r.up.eof && r.up.pending() == 0 && !r.up.shut) {
      shutdown(r.net, SHUT_WR);
      r.up.shut = true;
    }
    // Finished when both directions are, or when one side has hung up and everything the other
    // could still send it has been delivered: no byte is left that anyone could receive.
    r.done = (r.up.shut && r.down.shut) || (r.net_hup && r.down.shut) || (r.local_hup && r.up.shut);
  }

  void Service(Listener& l, short listen_rev, short control_rev, Clock::time_point now) {
    if (control_rev & (POLLIN | POLLHUP | POLLERR)) {
      // JS never writes here: readable means it ended or closed the control socket (listener
      // close), or something failed. Either way this listener is finished.
      char scratch[64];
      ssize_t n;
      do n = read(l.control, scratch, sizeof(scratch));
      while (n > 0 || (n < 0 && errno == EINTR));
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) || (control_rev & (POLLHUP | POLLERR))) {
        l.done = true;
        return;
      }
    }
    if (listen_rev & (POLLIN | POLLERR)) {
      for (int k = 0; k < kAcceptBatch; k++) {
        sockaddr_storage peer{};
        socklen_t length = sizeof(peer);
        int fd = accept4(l.fd, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          if (errno != EAGAIN && errno != EWOULDBLOCK) l.resume_at = now + kAcceptBackoff;  // EMFILE and the like
          break;
        }
        int pair[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
          CloseFd(fd);  // the client sees its connection close
          l.resume_at = now + kAcceptBackoff;
          break;
        }
        auto relay = std::make_unique<Relay>();
        relay->net = fd;
        relay->local = pair[0];
        relay->down.PutStatusOk();
        {
          std::lock_guard<std::mutex> lock(mu_);
          new_relays_.push_back(std::move(relay));
          relays_count_++;
          unclaimed_[pair[1]] = l.id;  // offered before it is announced: JS may claim it at once
        }
        size_t at = l.announcements.size();
        l.announcements.resize(at + kAnnouncementBytes);
        PutU32(&l.announcements[at], static_cast<uint32_t>(pair[1]));
        // A Unix listener (relayListenUnix) has no CID or port to report: zeros.
        const auto* vm = reinterpret_cast<const sockaddr_vm*>(&peer);
        bool is_vsock = peer.ss_family == AF_VSOCK;
        PutU32(&l.announcements[at + 4], is_vsock ? vm->svm_cid : 0);
        PutU32(&l.announcements[at + 8], is_vsock ? vm->svm_port : 0);
        if (l.announcements.size() >= kMaxPendingAnnouncements * kAnnouncementBytes) break;
      }
      // The new relays join at the top of the next round, before the loop polls again.
    }
    size_t written = 0;
    while (written < l.announcements.size()) {
      ssize_t n = send(l.control, l.announcements.data() + written, l.announcements.size() - written, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        written += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else {
        l.done = true;
        return;
      }
    }
    l.announcements.erase(l.announcements.begin(), l.announcements.begin() + written);
  }

  // Hub thread: a finished listener's announced but unclaimed fds are closed with it.
  void Forget(Listener& l) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = unclaimed_.begin(); it != unclaimed_.end();) {
      if (it->second == l.id) {
        CloseFd(it->first);
        it = unclaimed_.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::mutex mu_;
  // Guarded by mu_:
  bool stopped_ = false;
  bool running_ = false;
  int wake_fd_ = -1;
  uint64_t last_listener_id_ = 0;
  std::vector<std::unique_ptr<Relay>> new_relays_;
  std::vector<std::unique_ptr<Listener>> new_listeners_;
  std::unordered_map<int, uint64_t> unclaimed_;  // announced JS-side fd -> its listener's id
  size_t relays_count_ = 0;
  size_t listeners_count_ = 0;
  // Touched by the JS thread only (Wake, Stop):
  std::thread thread_;
};

namespace {

VsockHub& HubOf(Napi::Env env) {
  AddonState& state = StateOf(env);
  if (!state.vsock) state.vsock = std::make_shared<VsockHub>();
  return *state.vsock;
}

// A non-blocking AF_UNIX stream pair; [0] stays native, [1] goes to JS.
void UnixPair(Napi::Env env, int pair[2]) {
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
    throw ErrnoError(env, errno, "socketpair");
  }
}

std::string VsockSubject(double cid, double port) {
  return "vsock:" + std::to_string(static_cast<uint64_t>(cid)) + ":" + std::to_string(static_cast<uint64_t>(port));
}

// Hands `relay` to the hub and returns the JS end; closes everything on failure.
Napi::Value StartRelay(Napi::Env env, std::unique_ptr<Relay> relay, int js_end, const char* what) {
  if (int err = HubOf(env).Add(relay)) {
    relay.reset();
    CloseFd(js_end);
    throw ErrnoError(env, err, what, "relay thread");
  }
  return Napi::Number::New(env, js_end);
}

// Gives a bound, listening socket to the hub with a fresh control socket; returns what JS needs.
Napi::Value StartListener(Napi::Env env, std::unique_ptr<Listener> listener, uint32_t cid, uint32_t port) {
  int pair[2];
  UnixPair(env, pair);
  listener->control = pair[0];
  if (int err = HubOf(env).Add(listener)) {
    listener.reset();
    CloseFd(pair[1]);
    throw ErrnoError(env, err, "listen", "relay thread");
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("control", Napi::Number::New(env, pair[1]));
  result.Set("cid", Napi::Number::New(env, cid));
  result.Set("port", Napi::Number::New(env, port));
  return result;
}

}  // namespace

// vsockListen({ cid? = VMADDR_CID_ANY, port? = VMADDR_PORT_ANY, backlog? = 128 })
//   -> { control: fd, cid, port }  (cid/port as getsockname reports them)
Napi::Value VsockListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "vsockListen");
  double cid = IntegerOption(options, "cid", 0, 4294967295.0, false, VMADDR_CID_ANY);
  double port = IntegerOption(options, "port", 0, 4294967295.0, false, 0);
  double backlog = IntegerOption(options, "backlog", 1, 65535, false, 128);
  // Port 0 asks the kernel to pick one, as with TCP.
  uint32_t bind_port = port == 0 ? VMADDR_PORT_ANY : static_cast<uint32_t>(port);

  auto listener = std::make_unique<Listener>();
  listener->fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listener->fd < 0) throw ErrnoError(env, errno, "socket", "AF_VSOCK");
  sockaddr_vm address{};
  address.svm_family = AF_VSOCK;
  address.svm_cid = static_cast<uint32_t>(cid);
  address.svm_port = bind_port;
  if (bind(listener->fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    throw ErrnoError(env, errno, "bind", VsockSubject(cid, port));
  }
  if (listen(listener->fd, static_cast<int>(backlog)) != 0) throw ErrnoError(env, errno, "listen", VsockSubject(cid, port));
  socklen_t length = sizeof(address);
  if (getsockname(listener->fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw ErrnoError(env, errno, "getsockname");
  }
  return StartListener(env, std::move(listener), address.svm_cid, address.svm_port);
}

// relayListenUnix({ path, backlog? = 128 }) -> { control, cid: 0, port: 0 }: a listening AF_UNIX
// socket (mode 0600) run by the same accept loop, announcements and relays as vsockListen, so that
// path can be tested without a vsock peer. The caller removes the socket file.
Napi::Value RelayListenUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "relayListenUnix");
  Napi::Value path_value = options.Get("path");
  if (!path_value.IsString()) throw InvalidArgument(env, "option 'path' must be a string");
  std::string path = path_value.As<Napi::String>().Utf8Value();
  double backlog = IntegerOption(options, "backlog", 1, 65535, false, 128);
  auto listener = std::make_unique<Listener>();
  listener->fd = ListenUnix(env, path, static_cast<int>(backlog));
  return StartListener(env, std::move(listener), 0, 0);
}

// vsockConnect({ cid, port, timeoutMs? = 2000 }) -> fd of the JS end, whose stream starts with
// the status word (0, or the connect's errno, ETIMEDOUT after timeoutMs).
Napi::Value VsockConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "vsockConnect");
  double cid = IntegerOption(options, "cid", 0, 4294967295.0, true);
  double port = IntegerOption(options, "port", 0, 4294967295.0, true);
  double timeout_ms = IntegerOption(options, "timeoutMs", 1, 2147483647.0, false, 2000);
  if (cid == VMADDR_CID_ANY) throw InvalidArgument(env, "vsockConnect: cannot connect to VMADDR_CID_ANY; give the peer's CID");

  auto relay = std::make_unique<Relay>();
  relay->net = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (relay->net < 0) throw ErrnoError(env, errno, "socket", "AF_VSOCK");
  // The kernel gives up on its own after this (its default is 2 s); the hub's deadline is the same.
  timeval limit{static_cast<time_t>(timeout_ms / 1000), static_cast<suseconds_t>(std::fmod(timeout_ms, 1000) * 1000)};
  setsockopt(relay->net, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &limit, sizeof(limit));
  int pair[2];
  UnixPair(env, pair);
  relay->local = pair[0];
  relay->connecting = true;
  relay->deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_ms));

  sockaddr_vm address{};
  address.svm_family = AF_VSOCK;
  address.svm_cid = static_cast<uint32_t>(cid);
  address.svm_port = static_cast<uint32_t>(port);
  int r;
  do r = connect(relay->net, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  while (r != 0 && errno == EINTR);
  if (r != 0 && errno != EINPROGRESS) {
    // Failed at once (ENODEV, ECONNREFUSED, ...): reported like a late failure, in the status word.
    char status[kStatusBytes];
    PutU32(status, static_cast<uint32_t>(errno));
    (void)!send(relay->local, status, sizeof(status), MSG_NOSIGNAL | MSG_DONTWAIT);
    relay.reset();  // closes both native ends: JS reads the status, then end-of-file
    return Napi::Number::New(env, pair[1]);
  }
  // Connected at once or in progress: the hub's first poll reports it writable either way.
  return StartRelay(env, std::move(relay), pair[1], "connect");
}

// relayFd(fd) -> fd of the JS end: relays an already connected stream socket (any family) exactly
// as an accepted vsock connection is relayed. On success the hub owns `fd`; on a throw, the caller.
Napi::Value RelayFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, "relayFd");
  int type = 0;
  socklen_t length = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0) throw ErrnoError(env, errno, "getsockopt", "SO_TYPE");
  if (type != SOCK_STREAM) throw InvalidArgument(env, "relayFd: fd must be a stream socket");
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) throw ErrnoError(env, errno, "fcntl");
  int pair[2];
  UnixPair(env, pair);
  auto relay = std::make_unique<Relay>();
  relay->net = fd;
  relay->local = pair[0];
  relay->down.PutStatusOk();
  if (int err = HubOf(env).Add(relay)) {
    relay->net = -1;  // still the caller's
    relay.reset();
    CloseFd(pair[1]);
    throw ErrnoError(env, err, "relayFd", "relay thread");
  }
  return Napi::Number::New(env, pair[1]);
}

// vsockTakeAccepted(fd) -> true when `fd` (from a control record) was on offer and is now the caller's.
Napi::Value VsockTakeAccepted(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, "vsockTakeAccepted");
  return Napi::Boolean::New(env, HubOf(env).TakeAccepted(fd));
}

// vsockLocalCid() -> this machine's CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock).
Napi::Value VsockLocalCid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ErrnoError(env, errno, "open", "/dev/vsock");
  unsigned int cid = 0;
  int r = ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
  int err = errno;
  CloseFd(fd);
  if (r != 0) throw ErrnoError(env, err, "ioctl", "IOCTL_VM_SOCKETS_GET_LOCAL_CID");
  return Napi::Number::New(env, cid);
}

// vsockStats() -> { relays, listeners, unclaimed, running } of this environment's hub.
Napi::Value VsockStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  VsockHub::Stats stats = HubOf(env).GetStats();
  Napi::Object result = Napi::Object::New(env);
  result.Set("relays", Napi::Number::New(env, static_cast<double>(stats.relays)));
  result.Set("listeners", Napi::Number::New(env, static_cast<double>(stats.listeners)));
  result.Set("unclaimed", Napi::Number::New(env, static_cast<double>(stats.unclaimed)));
  result.Set("running", Napi::Boolean::New(env, stats.running));
  return result;
}

// socketpair() -> [fd, fd]: a non-blocking, close-on-exec AF_UNIX stream pair.
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pair[2];
  UnixPair(env, pair);
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Number::New(env, pair[0]));
  result.Set(1u, Napi::Number::New(env, pair[1]));
  return result;
}

// closeFd(fd): close(2) an fd the caller owns.
Napi::Value CloseFdExport(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, "closeFd");
  if (close(fd) != 0 && errno != EINTR) throw ErrnoError(env, errno, "close");
  return env.Undefined();
}

void StopVsockHub(VsockHub& hub) {
  hub.Stop();
}

}  // namespace ogurpchik
