// Credentials of the process at the other end of a connected Unix socket, as the kernel saw
// them at connect()/socketpair() time: they cannot be forged by the peer.
#include <sys/socket.h>

#include <cerrno>

#include "addon.h"

namespace ogurpchik {

// peerCredentials(fd) -> { pid, uid, gid }
Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw InvalidArgument(env, "peerCredentials: fd must be a number");
  double fd = info[0].As<Napi::Number>().DoubleValue();
  if (!(fd >= 0 && fd <= 2147483647.0) || static_cast<int>(fd) != fd) {
    throw InvalidArgument(env, "peerCredentials: fd must be a non-negative integer");
  }
  struct ucred cred;
  socklen_t length = sizeof(cred);
  if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
    throw ErrnoError(env, errno, "getsockopt", "SO_PEERCRED");
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("pid", Napi::Number::New(env, cred.pid));
  result.Set("uid", Napi::Number::New(env, cred.uid));
  result.Set("gid", Napi::Number::New(env, cred.gid));
  return result;
}

}  // namespace ogurpchik
