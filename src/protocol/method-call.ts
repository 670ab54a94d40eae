/**
 * The method-call shape: how a typed proxy's `api.echo('x')` travels. It is no new envelope kind,
 * only a convention for the payload of an ordinary Request, so a plain `call()` user or a peer in
 * another language can speak it (docs/PROTOCOL.md §2, "Method calls"):
 *
 *   request  { method: 'echo', args: ['x'], service?: 'greeter' }   (codec-encoded map)
 *   response the method's result, as is; a failure is an ordinary Error envelope
 */
import { RpcError } from '../errors.js';

/** A method call as it travels in a Request payload. */
export interface MethodCall {
  /** The method's name. */
  method: string;
  /** Its arguments, in order (absent: none). */
  args?: unknown[];
  /** The service the caller means; a server serving another one refuses the call. */
  service?: string;
}

/** Most arguments one call may carry: they are spread into a JS call, whose argument count is bounded. */
export const kMaxMethodArgs = 4096;

/** Builds the payload of a call; `service` is left out when there is none. */
export function methodCall(method: string, args: unknown[], service: string | undefined): MethodCall {
  return service === undefined ? { method, args } : { method, args, service };
}

/**
 * Reads an untrusted request payload as a method call, looking only at its own properties (never
 * at anything a prototype supplies). Throws `INVALID_ARGUMENT` naming what is wrong.
 */
export function parseMethodCall(request: unknown): { method: string; args: unknown[]; service: string | undefined } {
  if (request === null || typeof request !== 'object' || Array.isArray(request) || request instanceof Uint8Array) {
    throw new RpcError('INVALID_ARGUMENT', `a method call is a map { method, args }, got ${describe(request)}`);
  }
  const method = own(request, 'method');
  if (typeof method !== 'string' || method.length === 0) {
    throw new RpcError('INVALID_ARGUMENT', `a method call's \`method\` is a non-empty string, got ${describe(method)}`);
  }
  const args = own(request, 'args') ?? [];
  if (!Array.isArray(args)) throw new RpcError('INVALID_ARGUMENT', `the \`args\` of a call to ${quote(method)} are an array, got ${describe(args)}`);
  if (args.length > kMaxMethodArgs) throw new RpcError('INVALID_ARGUMENT', `a call to ${quote(method)} carries ${args.length} arguments; at most ${kMaxMethodArgs} are taken`);
  const service = own(request, 'service');
  if (service !== undefined && typeof service !== 'string') {
    throw new RpcError('INVALID_ARGUMENT', `a method call's \`service\` is a string when present, got ${describe(service)}`);
  }
  return { method, args, service };
}

/** Reads the `service` option shared by serveMethods, proxies and defineService: a non-empty string or nothing. */
export function checkServiceOption(options: { service?: unknown } | undefined, who: string): string | undefined {
  if (options !== undefined && (options === null || typeof options !== 'object')) throw new RpcError('INVALID_ARGUMENT', `${who}() takes an options object`);
  const service = options?.service;
  if (service !== undefined && (typeof service !== 'string' || service.length === 0)) {
    throw new RpcError('INVALID_ARGUMENT', `${who}(): \`service\` is a non-empty string, got ${typeof service}`);
  }
  return service;
}

/** A name from the peer, quoted and cut short enough for an error message. */
export function quote(name: string): string {
  return JSON.stringify(name.length > 100 ? `${name.slice(0, 100)}…` : name);
}

function own(object: object, key: string): unknown {
  return Object.hasOwn(object, key) ? (object as Record<string, unknown>)[key] : undefined;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Uint8Array) return 'bytes';
  return typeof value === 'object' ? 'an object' : typeof value;
}
