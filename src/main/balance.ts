/** Load spreading: which ready endpoint of a client takes the next call. */
import type { Session } from '../session/session.js';
import type { Endpoint } from './endpoint.js';

/** How calls are spread over the ready endpoints. */
export type BalancePolicy = 'round-robin' | 'least-in-flight';

/** Picks sessions by one policy; it keeps the cursor that round-robin (and least-in-flight's tie-break) moves on. */
export class Balancer {
  readonly #policy: BalancePolicy;
  #cursor = 0;

  constructor(policy: BalancePolicy) {
    this.#policy = policy;
  }

  /** The next ready endpoint's session by the policy, skipping `exclude` and connections that just closed. */
  pick(list: readonly Endpoint[], exclude: Set<Session> | undefined): Session | undefined {
    const n = list.length;
    let best: Session | undefined;
    let bestAt = 0;
    for (let i = 0; i < n; i++) {
      const at = (this.#cursor + i) % n;
      const session = list[at].session;
      // A closed session not yet noticed by its endpoint (its task is still ending): the Channel's sweep handles it.
      if (session === undefined || session.closedWith !== undefined || exclude?.has(session)) continue;
      if (this.#policy === 'round-robin') {
        this.#cursor = (at + 1) % n;
        return session;
      }
      if (best === undefined || session.pendingCount < best.pendingCount) {
        best = session;
        bestAt = at;
      }
    }
    // Least-in-flight breaks ties round-robin: the cursor moves past the one chosen.
    if (best !== undefined) this.#cursor = (bestAt + 1) % n;
    return best;
  }
}
