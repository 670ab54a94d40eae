/**
 * The one error class of ogurpchik. Every failure a user can see is an `RpcError` whose `code`
 * comes from a closed set, so callers branch on `err.code`, never on message text.
 */

/** Every code an `RpcError` can carry. */
export const errorCodes = [
  'CLOSED', // the connection or node was closed (locally, or the peer went away)
  'TIMEOUT', // the call's deadline passed
  'CANCELLED', // the caller aborted the call (AbortSignal) or the peer cancelled it
  'HANDSHAKE_FAILED', // the handshake did not complete (mismatch, timeout, bad packet)
  'AUTH_FAILED', // the peer rejected our credentials
  'PROTOCOL', // malformed frame or envelope
  'FRAME_TOO_LARGE', // a frame's length prefix exceeds the configured maximum
  'REMOTE', // the peer's handler threw; see `remote` and `cause`
  'UNAVAILABLE', // nothing to connect to, or the connection failed
  'BUSY', // a one-to-one server already serves a client, or the worker pool is full
  'NATIVE_MISSING', // the native addon is not built
  'UNIMPLEMENTED', // the peer has no handler for this kind of message
  'INVALID_ARGUMENT', // the caller passed something unusable (bad address, bad option, unencodable value)
] as const;

export type ErrorCode = (typeof errorCodes)[number];

/** What the peer's handler threw, as far as it could be carried. */
export interface RemoteErrorInfo {
  name: string;
  stack?: string;
  /** When the handler threw an RpcError itself: its code. */
  code?: ErrorCode;
}

/** The plain shape an error has when it crosses a thread or the wire. */
export interface WireError {
  code: ErrorCode;
  name: string;
  message: string;
  stack?: string;
  data?: Record<string, unknown>;
  cause?: WireError;
  remote?: RemoteErrorInfo;
}

const kCodeSet: ReadonlySet<string> = new Set(errorCodes);
/** Causes carried below an error, both ways: a chain from the peer is cut there too, so nothing rebuilt from it recurses without bound. */
const kMaxCauseDepth = 8;
/** Levels of nesting an error's data keeps, both ways (deeper parts are dropped). */
const kMaxDataDepth = 8;

/**
 * Where errors may carry their stacks to a peer (NodeOptions.remoteStacks): 'local' over the
 * same-machine, owner-only transports (unix, shm, isolate), 'always', or 'never'.
 */
export type RemoteStacks = 'local' | 'always' | 'never';

/** Whether errors sent over a transport of `kind` carry their stacks, under `policy`. */
export function sendsStacks(policy: RemoteStacks, kind: string): boolean {
  if (policy === 'local') return kind === 'unix' || kind === 'shm' || kind === 'isolate';
  return policy === 'always';
}

export interface RpcErrorOptions {
  cause?: unknown;
  /** Own properties of the original error, kept across the wire. */
  data?: Record<string, unknown>;
  remote?: RemoteErrorInfo;
}

export class RpcError extends Error {
  /** What went wrong, from a closed set. */
  readonly code: ErrorCode;
  /** Own enumerable properties the original error carried (e.g. `statusCode`). */
  readonly data?: Record<string, unknown>;
  /** For `REMOTE`: the name and stack of the error the peer's handler threw. */
  readonly remote?: RemoteErrorInfo;

  constructor(code: ErrorCode, message: string, options: RpcErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RpcError';
    this.code = code;
    if (options.data !== undefined) this.data = options.data;
    if (options.remote !== undefined) this.remote = options.remote;
  }

  /** True for any value that is an RpcError, also one built in another realm. */
  static is(value: unknown): value is RpcError {
    return value instanceof RpcError || (value instanceof Error && value.name === 'RpcError' && kCodeSet.has((value as RpcError).code));
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && kCodeSet.has(value);
}

/** One conversion to the wire shape: the objects on the current path (a reference back to one is a cycle), and whether stacks go. */
interface Walk {
  path: Set<object>;
  stacks: boolean;
}

/** Own enumerable properties worth carrying: everything but the standard fields, kept only if serialisable as plain data. */
function ownData(err: object, walk: Walk): Record<string, unknown> | undefined {
  let data: Record<string, unknown> | undefined;
  for (const key of Object.keys(err)) {
    if (key === 'name' || key === 'message' || key === 'stack' || key === 'cause' || key === 'code' && err instanceof RpcError) continue;
    if (key === 'data' || key === 'remote') continue;
    const value = (err as Record<string, unknown>)[key];
    if (typeof value === 'function' || typeof value === 'symbol') continue;
    (data ??= {})[key] = plainValue(value, 0, walk);
  }
  if (err instanceof RpcError && err.data) data = { ...err.data, ...data };
  return data;
}

/**
 * Reduces a value to something every codec (and structured clone) can carry: at most
 * kMaxDataDepth levels deep, a reference back to an object on the path (an error whose property points at itself, a
 * request and response that point at each other) as the string '[Circular]'.
 */
function plainValue(value: unknown, depth: number, walk: Walk): unknown {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'bigint') return value.toString();
    if (typeof value === 'function' || typeof value === 'symbol') return undefined;
    return value;
  }
  if (depth > kMaxDataDepth) return undefined;
  if (value instanceof Uint8Array) return value;
  if (value instanceof Date) return value.toISOString();
  const path = walk.path;
  if (path.has(value)) return '[Circular]';
  path.add(value);
  try {
    if (value instanceof Error) return wireError(value, 0, walk);
    if (Array.isArray(value)) return value.map((v) => plainValue(v, depth + 1, walk));
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const p = plainValue(v, depth + 1, walk);
      if (p !== undefined) out[k] = p;
    }
    return out;
  } finally {
    path.delete(value);
  }
}

export interface ToWireOptions {
  /** Keep the stacks of the error, its causes and the errors in its data (default true; false for a peer not trusted with them: see sendsStacks). */
  stacks?: boolean;
}

/** Converts any thrown value into the plain wire shape; anything but an RpcError gets code `REMOTE`. */
export function toWireError(err: unknown, options?: ToWireOptions): WireError {
  return wireError(err, 0, { path: new Set(err instanceof Error ? [err] : []), stacks: options?.stacks ?? true });
}

function wireError(err: unknown, depth: number, walk: Walk): WireError {
  if (!(err instanceof Error)) {
    const wire: WireError = { code: 'REMOTE', name: 'Error', message: typeof err === 'string' ? err : safeString(err) };
    if (typeof err === 'object' && err !== null) {
      // A plain object thrown (`throw { status: 404, message: 'gone' }`): its message if it has
      // one, and its fields as data, instead of '[object Object]' alone.
      const message = (err as { message?: unknown }).message;
      if (typeof message === 'string') wire.message = message;
      const data = plainValue(err, 0, walk);
      if (data !== null && typeof data === 'object' && !Array.isArray(data) && !(data instanceof Uint8Array)) {
        const { message: _message, ...rest } = data as Record<string, unknown>;
        if (Object.keys(rest).length > 0) wire.data = rest;
      }
    }
    return wire;
  }
  const wire: WireError = {
    code: RpcError.is(err) ? err.code : 'REMOTE',
    name: err.name,
    message: err.message,
  };
  if (err.stack !== undefined && walk.stacks) wire.stack = err.stack;
  const data = ownData(err, walk);
  if (data !== undefined) wire.data = data;
  if (RpcError.is(err) && err.remote) {
    // A third party's stack (an error passed on from a call of ours) goes no further than ours.
    const { stack, ...rest } = err.remote;
    wire.remote = walk.stacks && stack !== undefined ? { ...rest, stack } : rest;
  }
  const cause = err.cause;
  const path = walk.path;
  if (cause !== undefined && depth < kMaxCauseDepth && !(typeof cause === 'object' && cause !== null && path.has(cause))) {
    // An error cause is on the path while its own properties are read (a plain object adds itself).
    if (cause instanceof Error) path.add(cause);
    wire.cause = wireError(cause, depth + 1, walk);
  }
  return wire;
}

/** The message of anything thrown: an Error's, a string itself, a plain object's `message`, else its string form. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === 'string') return err;
  const message = typeof err === 'object' && err !== null ? (err as { message?: unknown }).message : undefined;
  return typeof message === 'string' ? message : safeString(err);
}

function safeString(value: unknown): string {
  try {
    return String(value);
  } catch {
    return 'unknown error';
  }
}

/**
 * Rebuilds an error from its wire shape. An RpcError stays an RpcError with its code; any other
 * error becomes `RpcError('REMOTE')` whose `remote` names the original class, with `cause` rebuilt.
 */
export function fromWireError(wire: WireError, depth = 0): RpcError {
  const cause = wire.cause !== undefined && depth < kMaxCauseDepth ? fromWireCause(wire.cause, depth + 1) : undefined;
  const code: ErrorCode = isErrorCode(wire.code) ? wire.code : 'REMOTE';
  const remote = wire.name !== 'RpcError' ? { name: wire.name, stack: wire.stack } : wire.remote;
  const err = new RpcError(code, String(wire.message ?? ''), { cause, data: wire.data, remote });
  if (wire.stack !== undefined && wire.name === 'RpcError') err.stack = wire.stack;
  return err;
}

/**
 * The error a caller sees when the peer's handler threw: always `REMOTE`, with the thrown error's
 * name, stack and (for an RpcError) code under `remote`, its own properties in `data`, `cause` rebuilt.
 */
export function remoteError(wire: WireError): RpcError {
  const remote: RemoteErrorInfo = { name: wire.name };
  if (wire.stack !== undefined) remote.stack = wire.stack;
  if (wire.name === 'RpcError' && isErrorCode(wire.code)) remote.code = wire.code;
  const cause = wire.cause !== undefined ? fromWireCause(wire.cause, 1) : undefined;
  return new RpcError('REMOTE', String(wire.message ?? ''), { cause, data: wire.data, remote });
}

/** A cause is rebuilt as the closest thing to what it was: an RpcError, or an Error with its name. */
function fromWireCause(wire: WireError, depth: number): Error {
  if (wire.name === 'RpcError') return fromWireError(wire, depth);
  const cause = wire.cause !== undefined && depth < kMaxCauseDepth ? fromWireCause(wire.cause, depth + 1) : undefined;
  const err = new Error(String(wire.message ?? ''), cause === undefined ? undefined : { cause });
  err.name = wire.name;
  // Without the peer's stack, this thread's would point at the code that rebuilt the error: its first line only.
  err.stack = wire.stack ?? `${err.name}: ${err.message}`;
  if (wire.data) Object.assign(err, wire.data);
  return err;
}

/**
 * Reads a value that should be a WireError (from an untrusted peer) into one, or undefined. What
 * it keeps is within the limits of what we send: causes kMaxCauseDepth deep, data kMaxDataDepth
 * deep, so that neither this nor anything that later walks the error recurses without bound.
 */
export function asWireError(value: unknown, depth = 0): WireError | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v.message !== 'string' || typeof v.name !== 'string') return undefined;
  const wire: WireError = { code: isErrorCode(v.code) ? v.code : 'REMOTE', name: v.name, message: v.message };
  if (typeof v.stack === 'string') wire.stack = v.stack;
  if (v.data !== null && typeof v.data === 'object' && !Array.isArray(v.data)) wire.data = boundedData(v.data, -1) as Record<string, unknown>; // its values at depth 0, as ownData's
  const cause = depth < kMaxCauseDepth ? asWireError(v.cause, depth + 1) : undefined;
  if (cause) wire.cause = cause;
  const remote = v.remote as Record<string, unknown> | null | undefined;
  if (remote !== null && typeof remote === 'object' && typeof remote.name === 'string') {
    wire.remote = { name: remote.name };
    if (typeof remote.stack === 'string') wire.remote.stack = remote.stack;
    if (isErrorCode(remote.code)) wire.remote.code = remote.code;
  }
  return wire;
}

/** A peer's data cut as plainValue cuts ours: arrays and plain objects below kMaxDataDepth levels are dropped. */
function boundedData(value: unknown, depth: number): unknown {
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value)) return value;
  if (depth > kMaxDataDepth) return undefined;
  if (Array.isArray(value)) return value.map((v) => boundedData(v, depth + 1));
  const proto = Object.getPrototypeOf(value);
  // What else a codec makes (a Date, a Map from some other decoder) is kept as it is, within the limit.
  if (proto !== Object.prototype && proto !== null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const b = boundedData(v, depth + 1);
    if (b !== undefined) out[k] = b;
  }
  return out;
}
