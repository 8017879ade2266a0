import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EarlyAnswers } from '../src/resp/connection.js';

describe('EarlyAnswers (answers held until their turn)', () => {
  it('releases every answer exactly once, in command order, whatever the completion order (property)', () => {
    fc.assert(
      fc.property(
        // How many commands are in flight at once (past the ring's first size, so it grows), and the
        // order in which their answers complete.
        fc
          .integer({ min: 1, max: 300 })
          .chain((count) =>
            fc.tuple(fc.constant(count), fc.shuffledSubarray([...Array(count).keys()], { minLength: count })),
          ),
        fc.integer({ min: 0, max: 5 }),
        ([count, completions], rounds) => {
          const early = new EarlyAnswers();
          const written: number[] = [];
          let head = 0;
          // Several batches on the same ring: sequence numbers keep growing, as on a connection.
          for (let round = 0; round <= rounds; round++) {
            const offset = round * count;
            for (const index of completions) {
              const seq = offset + index;
              if (seq !== head) {
                early.set(seq, Uint8Array.of(seq & 0xff, seq >> 8), head);
                expect(early.has(seq)).toBe(true);
                continue;
              }
              written.push(seq);
              head++;
              for (let next = early.take(head); next !== undefined; next = early.take(head)) {
                expect((next[0]! | (next[1]! << 8)) & 0xffff).toBe(head & 0xffff);
                written.push(head);
                head++;
              }
            }
            expect(early.size).toBe(0);
          }
          expect(written).toEqual([...Array(count * (rounds + 1)).keys()]);
        },
      ),
    );
  });

  it('holds nothing after clear, and answers of other numbers are not confused with held ones', () => {
    const early = new EarlyAnswers();
    early.set(5, Uint8Array.of(5), 0);
    early.set(21, Uint8Array.of(21), 0);
    expect(early.size).toBe(2);
    // 37 shares a slot with 5 and 21 in a ring of 16 or 32 slots: not held.
    expect(early.has(37)).toBe(false);
    expect(early.take(37)).toBeUndefined();
    expect(early.take(21)).toEqual(Uint8Array.of(21));
    early.clear();
    expect(early.size).toBe(0);
    expect(early.has(5)).toBe(false);
  });
});
