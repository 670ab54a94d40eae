/**
 * Reading and writing the files of a discovery directory without taking anything in it on trust.
 * The directory is used only when no one but this user (or root) can write into it; a file is read
 * only when it is a regular file of bounded size, opened without following a symbolic link and
 * without blocking, so a FIFO, a device, a symlink to somewhere else or a huge file there counts as
 * absent instead of hanging or misleading a reader; a file is written whole, through a fresh temp
 * file and a rename.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { RpcError } from '../errors.js';
import { untrustedDir } from '../private-dir.js';

/** The largest record or host entry read: a record is a few hundred bytes, so a bigger file is not one. */
export const kMaxRecordBytes = 64 * 1024;

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = fs.constants;
// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, holding a libuv thread
// for good; O_NOFOLLOW: a symlink at a record's path fails (ELOOP) instead of being read.
const kReadFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK;
// O_EXCL never opens what is already there (a planted symlink included), so the temp file is ours.
const kWriteFlags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;

/** Creates the discovery directory `dir` (0700) when missing, and checks it may be trusted. */
export async function ensureTrustedDir(dir: string): Promise<void> {
  try {
    await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EEXIST' || e.code === 'ENOTDIR') throw notADirectory(dir, err);
    throw new RpcError('UNAVAILABLE', `cannot create the discovery directory ${dir}: ${e.message}`, { cause: err });
  }
  await trustedDir(dir);
}

/** Whether the discovery directory `dir` exists; throws when it is not one or is not to be trusted. */
export async function trustedDir(dir: string): Promise<boolean> {
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(dir);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return false;
    if (e.code === 'ENOTDIR') throw notADirectory(dir, err);
    throw new RpcError('UNAVAILABLE', `cannot read the discovery directory ${dir}: ${e.message}`, { cause: err });
  }
  if (!st.isDirectory()) throw notADirectory(dir);
  checkTrusted('discovery directory', dir, st);
  return true;
}

/** Whether the host entries directory `dir` exists; checked as the directory itself, and that it is no symlink (O_NOFOLLOW guards only a path's last part). */
export async function trustedHostsDir(dir: string): Promise<boolean> {
  let st: fs.Stats;
  try {
    st = await fs.promises.lstat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new RpcError('UNAVAILABLE', `cannot read the host entries directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
  if (!st.isDirectory()) throw notADirectory(dir);
  checkTrusted('host entries directory', dir, st);
  return true;
}

/** Reads the files of one directory as untrusted input, and warns once about each one it skips. */
export class UntrustedFiles {
  /** What was skipped in the directory and warned about once: `<file>: <why>`. */
  readonly #warned = new Set<string>();

  constructor(readonly dir: string) {}

  /**
   * The text of `file` if it is a regular file (not a symlink) of this user or root, with one
   * link, of at most kMaxRecordBytes; else undefined, with a warning once for what should not be there. Never blocks:
   * a FIFO opens at once (O_NONBLOCK) and is turned away by its fstat.
   */
  async readText(file: string): Promise<string | undefined> {
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(file, kReadFlags);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'EMLINK') this.skip(file, 'is a symbolic link');
      else if (code !== 'ENOENT') this.skip(file, `cannot be opened (${code})`);
      return undefined;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) return this.skip(file, 'is not a regular file');
      const uid = process.getuid?.();
      if (uid !== undefined && st.uid !== uid && st.uid !== 0) return this.skip(file, `is owned by uid ${st.uid}, not by uid ${uid} or root`);
      // A record is renamed into place, so it has one name; another is a file living elsewhere too.
      if (st.nlink !== 1) return this.skip(file, `has ${st.nlink} hard links`);
      if (st.size > kMaxRecordBytes) return this.skip(file, `is larger than ${kMaxRecordBytes} bytes`);
      // One byte more than fstat said: a file that grew meanwhile is being written, not a record.
      const buf = Buffer.allocUnsafe(st.size + 1);
      let n = 0;
      while (n < buf.length) {
        const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
        if (bytesRead === 0) break;
        n += bytesRead;
      }
      return n > st.size ? undefined : buf.toString('utf8', 0, n);
    } catch {
      return undefined;
    } finally {
      await fh.close().catch(() => {});
    }
  }

  /** Warns once per file and reason about something skipped in the directory; returns undefined (absent). */
  skip(file: string, why: string): undefined {
    const name = path.isAbsolute(file) ? path.relative(this.dir, file) : file;
    const key = `${name}: ${why}`;
    if (this.#warned.has(key)) return undefined;
    // Bounded: a directory filling with junk must not grow this set without end.
    if (this.#warned.size >= 1024) return undefined;
    this.#warned.add(key);
    process.emitWarning(`ogurpchik: discovery skips ${path.join(this.dir, name)}: it ${why}`, { code: 'OGURPCHIK_DISCOVERY_SKIPPED' });
    return undefined;
  }
}

/** Writes `file` as a whole: a fresh temp file (O_EXCL, 0600) beside it, then a rename, which replaces whatever non-directory was at `file` rather than writing through it. */
export async function writeAtomically(file: string, text: string): Promise<void> {
  let tmp = '';
  let fh: fs.promises.FileHandle | undefined;
  for (let attempt = 0; fh === undefined; attempt++) {
    tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      fh = await fs.promises.open(tmp, kWriteFlags, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && attempt < 3) continue;
      throw new RpcError('UNAVAILABLE', `cannot write ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  try {
    try {
      await fh.writeFile(text);
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, file);
  } catch (err) {
    await fs.promises.rm(tmp, { force: true }).catch(() => {});
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'EISDIR' || e.code === 'ENOTEMPTY' || e.code === 'EEXIST' ? 'a directory is in the way' : e.message;
    throw new RpcError('UNAVAILABLE', `cannot write ${file}: ${why}`, { cause: err });
  }
}

/** Refuses a directory another user could write into: it must belong to this user or root and not be group- or world-writable (as ssh's StrictModes asks). */
function checkTrusted(what: string, dir: string, st: fs.Stats): void {
  if (untrustedDir(st) === undefined) return;
  const uid = process.getuid!();
  const found = `owner uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}`;
  const required = `it must be owned by uid ${uid}${uid === 0 ? '' : ' or root'} and not writable by group or others (chmod go-w; the default directory is created 0700)`;
  throw new RpcError('INVALID_ARGUMENT', `${what} ${dir} is not safe (${found}): ${required}`);
}

function notADirectory(dir: string, cause?: unknown): RpcError {
  return new RpcError('INVALID_ARGUMENT', `discovery directory ${dir} is not a directory (something else is at that path)`, cause === undefined ? undefined : { cause });
}
