/**
 * IdTable, the session's call table, behaves as a Map from id to value whatever the ids: in
 * sequence, colliding in its slots (a call in flight for a whole lap of ids, a peer choosing ids
 * that collide), beyond 2^32, across growing and shrinking.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { IdTable } from '../src/session/id-table.js';

type Op = { op: 'set'; id: number; value: number } | { op: 'delete'; id: number } | { op: 'get'; id: number };

/** Ids as sessions see them: small, multiples of slot counts (collisions), near and past 2^32. */
const ids = fc.oneof(
  fc.nat({ max: 300 }),
  fc.nat({ max: 40 }).map((k) => k * 64),
  fc.nat({ max: 40 }).map((k) => k * 1024 + 7),
  fc.nat({ max: 20 }).map((k) => 2 ** 32 - 10 + k),
  fc.nat({ max: 2 ** 40 }),
);
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), id: ids, value: fc.integer() }),
  fc.record({ op: fc.constant('delete' as const), id: ids }),
  fc.record({ op: fc.constant('get' as const), id: ids }),
);

function sameContents(table: IdTable<number>, model: Map<number, number>): void {
  assert.equal(table.size, model.size);
  const entries = table.entries().sort((a, b) => a[0] - b[0]);
  assert.deepEqual(entries, [...model].sort((a, b) => a[0] - b[0]));
  assert.deepEqual(table.values().sort((a, b) => a - b), [...model.values()].sort((a, b) => a - b));
}

describe('IdTable', function () {
  this.timeout(30_000);

  it('matches a Map under any sequence of set, delete and get', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const table = new IdTable<number>();
        const model = new Map<number, number>();
        for (const o of ops) {
          if (o.op === 'set') {
            table.set(o.id, o.value);
            model.set(o.id, o.value);
          } else if (o.op === 'delete') {
            assert.equal(table.delete(o.id), model.get(o.id));
            model.delete(o.id);
          } else {
            assert.equal(table.get(o.id), model.get(o.id));
            assert.equal(table.has(o.id), model.has(o.id));
          }
        }
        sameContents(table, model);
        table.clear();
        sameContents(table, new Map());
      }),
      { numRuns: 300 },
    );
  });

  it('grows under a burst, keeps a call that stays through laps of ids, and shrinks back', () => {
    const table = new IdTable<number>();
    const model = new Map<number, number>();
    // One call that stays in flight while 10,000 others come and go, 64 at a time.
    table.set(1, -1);
    model.set(1, -1);
    for (let id = 2; id < 10_002; id++) {
      table.set(id, id);
      model.set(id, id);
      if (id >= 66) {
        assert.equal(table.delete(id - 64), id - 64);
        model.delete(id - 64);
      }
    }
    sameContents(table, model);
    assert.equal(table.get(1), -1);
    // A burst of 5,000 in flight at once, then all but the long one gone.
    for (let id = 20_000; id < 25_000; id++) table.set(id, id);
    for (let id = 20_000; id < 25_000; id++) assert.equal(table.get(id), id);
    for (const [id] of table.entries()) if (id !== 1) table.delete(id);
    sameContents(table, new Map([[1, -1]]));
  });
});
