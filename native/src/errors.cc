// Error construction and option parsing shared by every exported function.
#include <uv.h>

#include <cerrno>
#include <cmath>

#include "addon.h"

namespace ogurpchik {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& subject) {
  char name[64];
  char description[256];
  // libuv's codes are the negated errno values on Unix, so its tables name any errno.
  uv_err_name_r(-err, name, sizeof(name));
  uv_strerror_r(-err, description, sizeof(description));
  std::string message = std::string(name) + ": " + description + ", " + syscall;
  if (!subject.empty()) message += " '" + subject + "'";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, name));
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

Napi::Error InvalidArgument(Napi::Env env, const std::string& message) {
  Napi::Error error = Napi::TypeError::New(env, message);
  error.Set("code", Napi::String::New(env, "EINVAL"));
  error.Set("errno", Napi::Number::New(env, -EINVAL));
  return error;
}

Napi::Object OptionsArg(const Napi::CallbackInfo& info, const char* fn) {
  if (info.Length() < 1 || !info[0].IsObject()) {
    throw InvalidArgument(info.Env(), std::string(fn) + ": expected an options object");
  }
  return info[0].As<Napi::Object>();
}

double IntegerOption(Napi::Object options, const char* key, double min, double max, bool required,
                     double fallback) {
  Napi::Env env = options.Env();
  Napi::Value value = options.Get(key);
  if (value.IsUndefined()) {
    if (!required && fallback >= min) return fallback;
    throw InvalidArgument(env, std::string("option '") + key + "' is required");
  }
  if (!value.IsNumber()) throw InvalidArgument(env, std::string("option '") + key + "' must be a number");
  double n = value.As<Napi::Number>().DoubleValue();
  if (std::isinf(n) && n > 0 && max == INFINITY) return n;
  if (!std::isfinite(n) || std::trunc(n) != n || n < min || n > max) {
    throw InvalidArgument(env, std::string("option '") + key + "' must be an integer in [" +
                                   std::to_string(static_cast<long long>(min)) + ", " +
                                   (max == INFINITY ? std::string("Infinity")
                                                    : std::to_string(static_cast<long long>(max))) +
                                   "], got " + value.ToString().Utf8Value());
  }
  return n;
}

bool BoolOption(Napi::Object options, const char* key, bool fallback) {
  Napi::Value value = options.Get(key);
  if (value.IsUndefined()) return fallback;
  if (!value.IsBoolean()) {
    throw InvalidArgument(options.Env(), std::string("option '") + key + "' must be a boolean");
  }
  return value.As<Napi::Boolean>().Value();
}

int FdArg(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw InvalidArgument(env, std::string(fn) + ": fd must be a number");
  double fd = info[0].As<Napi::Number>().DoubleValue();
  if (!(fd >= 0 && fd <= 2147483647.0) || static_cast<int>(fd) != fd) {
    throw InvalidArgument(env, std::string(fn) + ": fd must be a non-negative integer");
  }
  return static_cast<int>(fd);
}

}  // namespace ogurpchik
