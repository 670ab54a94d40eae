// POSIX shared memory mapped into a SharedArrayBuffer.
//
// The segment is mapped MAP_SHARED and handed to V8 as an external backing store whose deleter
// munmaps it, so the mapping lives exactly as long as the last SharedArrayBuffer over it (also
// copies posted to other threads). Node-API in Node 20 cannot make a SharedArrayBuffer, and an
// external *ArrayBuffer* over the mapping supports Atomics.load/store but not Atomics.wait, so
// this file uses V8's API directly (see ToNapi in addon.h: the build is per Node major).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "addon.h"

namespace ogurpchik {
namespace {

// shm_open takes "/name": one leading slash, then 1..NAME_MAX bytes with no '/' and no NUL.
std::string ValidName(Napi::Env env, Napi::Value value) {
  if (!value.IsString()) throw InvalidArgument(env, "shm name must be a string");
  std::string name = value.As<Napi::String>().Utf8Value();
  std::string rest = name.size() > 0 ? name.substr(1) : "";
  bool ok = name.size() >= 2 && name[0] == '/' && rest.size() <= NAME_MAX &&
            rest.find('/') == std::string::npos && rest.find('\0') == std::string::npos &&
            rest != "." && rest != "..";
  if (!ok) {
    throw InvalidArgument(env, "shm name must be '/' followed by 1-" + std::to_string(NAME_MAX) +
                                   " characters without '/', got '" + name + "'");
  }
  return name;
}

void UnmapSegment(void* data, size_t length, void* /*deleter_data*/) {
  munmap(data, length);
}

}  // namespace

// shmOpen({ name, size?, create?, exclusive? }) -> SharedArrayBuffer
Napi::Value ShmOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "shmOpen");
  std::string name = ValidName(env, options.Get("name"));
  bool create = BoolOption(options, "create", false);
  bool exclusive = BoolOption(options, "exclusive", false);
  if (exclusive && !create) throw InvalidArgument(env, "shmOpen: 'exclusive' needs 'create'");
  // 2^53 - 1 is JS's largest exact integer; the kernel refuses what it cannot map.
  // size 0 below means "the segment's current size" (only when opening without create).
  size_t size = 0;
  if (create || !options.Get("size").IsUndefined()) {
    size = static_cast<size_t>(IntegerOption(options, "size", 1, 9007199254740991.0, true));
  }

  // Try to create first so we know whether we own the sizing; a non-exclusive create that finds
  // the segment falls back to opening it (and, if it vanished in between, tries again).
  int fd = -1;
  bool created = false;
  for (int attempt = 0; fd < 0; attempt++) {
    if (create) {
      fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd >= 0) {
        created = true;
        break;
      }
      if (errno != EEXIST || exclusive) throw ErrnoError(env, errno, "shm_open", name);
    }
    fd = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd < 0 && !(create && errno == ENOENT && attempt < 3)) throw ErrnoError(env, errno, "shm_open", name);
  }

  auto fail = [&](int err, const char* syscall) -> Napi::Error {
    close(fd);
    if (created) shm_unlink(name.c_str());
    return ErrnoError(env, err, syscall, name);
  };

  if (created) {
    if (ftruncate(fd, static_cast<off_t>(size)) != 0) throw fail(errno, "ftruncate");
  } else {
    struct stat st;
    if (fstat(fd, &st) != 0) throw fail(errno, "fstat");
    size_t actual = static_cast<size_t>(st.st_size);
    if (size == 0) size = actual;
    // Mapping past the end of the object would SIGBUS on first touch; refuse instead.
    if (actual == 0 || size > actual) {
      close(fd);
      Napi::Error error = ErrnoError(env, EINVAL, "shm_open", name);
      error.Set("message", Napi::String::New(env, "EINVAL: segment '" + name + "' is " +
                                                      std::to_string(actual) + " bytes, " +
                                                      std::to_string(size) + " asked for"));
      throw error;
    }
  }

  void* data = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) throw fail(errno, "mmap");
  close(fd);  // the mapping keeps the object alive

  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  std::shared_ptr<v8::BackingStore> store =
      v8::SharedArrayBuffer::NewBackingStore(data, size, UnmapSegment, nullptr);
  return Napi::Value(env, ToNapi(v8::SharedArrayBuffer::New(isolate, std::move(store))));
}

// shmUnlink(name): removes the name; mappings already made stay valid until released.
Napi::Value ShmUnlink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ValidName(env, info.Length() > 0 ? info[0] : env.Undefined());
  if (shm_unlink(name.c_str()) != 0) throw ErrnoError(env, errno, "shm_unlink", name);
  return env.Undefined();
}

// adjustExternalMemory(bytes): tells this thread's V8 heap that it holds `bytes` more memory
// (fewer, when negative) than its objects show, so that its GC weighs it; returns the new total.
// V8 counts no shared backing store towards GC pressure (a SharedArrayBuffer's per-isolate
// accounting length is 0): without this, the rings of closed connections wait for a GC that
// their own size never triggers.
Napi::Value AdjustExternalMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    throw InvalidArgument(env, "adjustExternalMemory: bytes must be a number");
  }
  int64_t bytes = info[0].As<Napi::Number>().Int64Value();
  return Napi::Number::New(env, static_cast<double>(Napi::MemoryManagement::AdjustExternalMemory(env, bytes)));
}

}  // namespace ogurpchik
