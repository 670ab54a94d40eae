/**
 * comlink's Endpoint over a Node MessagePort. comlink's own node adapter has broken typings under
 * NodeNext, and this is all it does.
 */
import type { Endpoint } from 'comlink';
import type { MessagePort } from 'node:worker_threads';

type Listener = (event: { data: unknown }) => void;

export function nodeEndpoint(port: MessagePort): Endpoint {
  const wrapped = new WeakMap<object, (data: unknown) => void>();
  return {
    postMessage: (message: unknown, transfer?: readonly unknown[]) => port.postMessage(message, transfer as never),
    addEventListener: (_type: string, listener: unknown) => {
      const fn = (data: unknown) => {
        if (typeof listener === 'function') (listener as Listener)({ data });
        else (listener as { handleEvent: Listener }).handleEvent({ data });
      };
      wrapped.set(listener as object, fn);
      port.on('message', fn);
    },
    removeEventListener: (_type: string, listener: unknown) => {
      const fn = wrapped.get(listener as object);
      if (fn) port.off('message', fn);
    },
    start: () => port.start(),
  } as unknown as Endpoint;
}
