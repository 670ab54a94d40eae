/**
 * The per-user directory where sockets and records go when $XDG_RUNTIME_DIR is unset. The temp
 * dir is shared by every user, so a name in it is anyone's to take first: the directory is made
 * 0700 and, whoever made it, used only when it is ours and nobody else can write to it (ssh's
 * StrictModes).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RpcError } from './errors.js';

/** `<tmp>/ogurpchik-<uid>`: this user's directory in the temp dir (not created; see securePrivateDir). */
export function perUserTempDir(): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return path.join(os.tmpdir(), `ogurpchik-${uid}`);
}

/**
 * What makes a directory unsafe to take sockets or records from (as ssh's StrictModes judges):
 * 'owner' when neither this user nor root owns it, 'writable' when group or others may write to
 * it; undefined when it is safe, or where there are no uids to judge (Windows).
 */
export function untrustedDir(st: fs.Stats): 'owner' | 'writable' | undefined {
  const uid = process.getuid?.();
  if (uid === undefined) return undefined;
  if (st.uid !== uid && st.uid !== 0) return 'owner';
  if ((st.mode & 0o022) !== 0) return 'writable';
  return undefined;
}

/**
 * Makes `dir` (mode 0700) when `create` and it is missing; throws INVALID_ARGUMENT unless what is
 * there is a directory (not a symlink) owned by this user (or root) that group and others cannot write.
 * A missing `dir` without `create` passes: whoever then looks in it finds nothing.
 */
export function securePrivateDir(dir: string, options: { create: boolean }): void {
  if (options.create) {
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') throw new RpcError('UNAVAILABLE', `cannot create the private directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
  }
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !options.create) return;
    throw new RpcError('UNAVAILABLE', `cannot inspect the private directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
  if (!st.isDirectory()) throw new RpcError('INVALID_ARGUMENT', `${dir} is not a directory (something else, perhaps a symlink, is at that path): refusing to use it`);
  const unsafe = untrustedDir(st);
  if (unsafe === 'owner') throw new RpcError('INVALID_ARGUMENT', `the private directory ${dir} belongs to uid ${st.uid}, not to this process's uid ${process.getuid!()} or root: refusing to use it`);
  if (unsafe === 'writable') {
    throw new RpcError('INVALID_ARGUMENT', `the private directory ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}): refusing to use it; chmod 700 it`);
  }
}
