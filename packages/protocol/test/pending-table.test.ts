import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type PendingRequest, PendingTable } from '../src/connection.js';

function entry(id: number): PendingRequest {
  return {
    id,
    resolve: undefined,
    reject: undefined,
    callback: () => undefined,
    deadline: 0,
    timeoutMs: 0,
    stopAbortWatch: undefined,
  };
}

describe('PendingTable (requests awaiting answers, by id)', () => {
  it('behaves as a map from id to request under the connection id allocation (property)', () => {
    // Steps: send (allocate the next free id as Connection does), answer the k-th oldest pending
    // request, or look up an arbitrary id (an answer to an id long gone, or never sent).
    // Sends outweigh answers, so the table grows (past 64, 128, 256 pending) within a run.
    const step = fc.oneof(
      { arbitrary: fc.record({ kind: fc.constant('send' as const) }), weight: 4 },
      { arbitrary: fc.record({ kind: fc.constant('answer' as const), pick: fc.nat() }), weight: 2 },
      {
        arbitrary: fc.record({ kind: fc.constant('lookup' as const), id: fc.nat({ max: 5000 }) }),
        weight: 1,
      },
    );
    fc.assert(
      fc.property(
        fc.array(step, { minLength: 300, maxLength: 800 }),
        fc.nat({ max: 2 ** 32 - 1 }),
        (steps, firstId) => {
          const table = new PendingTable();
          const model = new Map<number, PendingRequest>();
          let nextId = firstId;
          // Plain comparisons at every step, vitest's expect only to report a difference: an
          // expect per step (some 100,000 over the 100 runs) cost most of the test's time.
          for (const action of steps) {
            if (action.kind === 'send') {
              let id = nextId;
              while (id === 0 || !table.isFree(id)) id = (id + 1) >>> 0;
              nextId = (id + 1) >>> 0;
              if (model.has(id)) expect(model.has(id), `id ${id} handed out twice`).toBe(false);
              const request = entry(id);
              table.set(request);
              model.set(id, request);
            } else if (action.kind === 'answer') {
              if (model.size === 0) continue;
              const id = [...model.keys()][action.pick % model.size]!;
              const request = table.get(id);
              if (request !== model.get(id)) expect(request, `answer ${id}`).toBe(model.get(id));
              table.delete(request!);
              model.delete(id);
              if (table.get(id) !== undefined)
                expect(table.get(id), `${id} after its answer`).toBeUndefined();
            } else if (table.get(action.id) !== model.get(action.id)) {
              expect(table.get(action.id), `lookup ${action.id}`).toBe(model.get(action.id));
            }
            if (table.size !== model.size) expect(table.size).toBe(model.size);
          }
          expect(new Set(table.entries())).toEqual(new Set(model.values()));
          table.clear();
          expect(table.size).toBe(0);
          const left = [...model.keys()].filter((id) => table.get(id) !== undefined);
          expect(left, 'ids found after clear').toEqual([]);
        },
      ),
    );
  });

  it('never gives the answer to an id that shares a slot with another pending request', () => {
    const table = new PendingTable();
    const held = entry(5);
    table.set(held);
    // 5 + 64 and 5 + 128 land on 5's slot in a table of 64: not free, and not the held request.
    expect(table.isFree(5 + 64)).toBe(false);
    expect(table.get(5 + 64)).toBeUndefined();
    expect(table.get(5 + 128)).toBeUndefined();
    expect(table.get(5)).toBe(held);
  });
});
