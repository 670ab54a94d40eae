// Listening sockets shared by several worker threads (serve(..., { threads })): the main thread
// holds one listening socket that no event loop watches, and each listener task adopts a
// duplicate of it (net.Server#listen({ fd })), so the kernel hands each new connection to
// whichever of their threads accepts first. Bound here rather than by Node, because libuv
// unlinks a Unix socket's path when the handle that bound it closes: a listener task that died
// would take the path from the others.
#include "addon.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace ogurpchik {

namespace {

// Node's default backlog for net.Server#listen.
constexpr double kDefaultBacklog = 511;

// Closes `fd` on every exit path unless released.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) close(fd);
  }
  int Release() {
    int out = fd;
    fd = -1;
    return out;
  }
};

}  // namespace

// bind(2) creates the file with the process umask's mode, and the chmod comes after: callers bind
// in a private directory and link the socket into place (src/transport/socket-file.ts), since a
// process-wide umask() around bind would race other threads.
int ListenUnix(Napi::Env env, const std::string& path, int backlog) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) throw InvalidArgument(env, "option 'path' must be 1-107 bytes");
  memcpy(address.sun_path, path.data(), path.size());
  FdGuard fd{socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (fd.fd < 0) throw ErrnoError(env, errno, "socket", "AF_UNIX");
  if (bind(fd.fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) throw ErrnoError(env, errno, "bind", path);
  if (chmod(path.c_str(), 0600) != 0 || listen(fd.fd, backlog) != 0) {
    int err = errno;
    unlink(path.c_str());
    throw ErrnoError(env, err, "listen", path);
  }
  return fd.Release();
}

// listenSocket({ path } | { host, port }, backlog? = 511) -> { fd, port }: a listening socket the
// caller owns. `path`: an AF_UNIX socket file, mode 0600 once bound (in a private directory; the
// caller removes a stale one first, and the file when done). `host`: a numeric IPv4 or IPv6
// address, `port` 0-65535 (0: the kernel picks; `port` in the result says which); SO_REUSEADDR as
// Node sets it.
Napi::Value ListenSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "listenSocket");
  int backlog = static_cast<int>(IntegerOption(options, "backlog", 1, 65535, false, kDefaultBacklog));
  Napi::Value path_value = options.Get("path");
  Napi::Object result = Napi::Object::New(env);

  if (path_value.IsString()) {
    result.Set("fd", Napi::Number::New(env, ListenUnix(env, path_value.As<Napi::String>().Utf8Value(), backlog)));
    result.Set("port", Napi::Number::New(env, 0));
    return result;
  }

  Napi::Value host_value = options.Get("host");
  if (!host_value.IsString()) throw InvalidArgument(env, "listenSocket: give 'path', or 'host' and 'port'");
  std::string host = host_value.As<Napi::String>().Utf8Value();
  int port = static_cast<int>(IntegerOption(options, "port", 0, 65535, true));
  sockaddr_storage address{};
  socklen_t length = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    length = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    length = sizeof(sockaddr_in6);
  } else {
    throw InvalidArgument(env, "listenSocket: 'host' must be a numeric IPv4 or IPv6 address, got '" + host + "'");
  }
  FdGuard fd{socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (fd.fd < 0) throw ErrnoError(env, errno, "socket", host);
  int on = 1;
  if (setsockopt(fd.fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0) throw ErrnoError(env, errno, "setsockopt", "SO_REUSEADDR");
  std::string subject = host + ":" + std::to_string(port);
  if (bind(fd.fd, reinterpret_cast<sockaddr*>(&address), length) != 0) throw ErrnoError(env, errno, "bind", subject);
  if (listen(fd.fd, backlog) != 0) throw ErrnoError(env, errno, "listen", subject);
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof(bound);
  if (getsockname(fd.fd, reinterpret_cast<sockaddr*>(&bound), &bound_length) != 0) throw ErrnoError(env, errno, "getsockname", subject);
  int bound_port = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                                : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  result.Set("fd", Napi::Number::New(env, fd.Release()));
  result.Set("port", Napi::Number::New(env, bound_port));
  return result;
}

// dupFd(fd) -> a new fd (close-on-exec) for the same open socket, which the caller owns.
Napi::Value DupFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, "dupFd");
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) throw ErrnoError(env, errno, "fcntl", "F_DUPFD_CLOEXEC");
  return Napi::Number::New(env, copy);
}

}  // namespace ogurpchik
