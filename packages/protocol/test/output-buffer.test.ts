import { setImmediate as nextImmediate } from 'node:timers/promises';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EndOfTickQueue, type EndOfTickWriter, OutputBuffer } from '../src/internal.js';

/** A writer that records, in `log`, each time it is flushed. */
function writer(name: string, log: string[], then?: () => void): EndOfTickWriter {
  return {
    flushBuffered: () => {
      log.push(name);
      then?.();
    },
  };
}

describe('OutputBuffer.takeView', () => {
  it('hands out the same bytes as take(), as plain views never overwritten afterwards (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.uint8Array({ maxLength: 30_000 }), fc.boolean(), fc.boolean()), {
          maxLength: 40,
        }),
        (steps) => {
          const output = new OutputBuffer();
          const taken: Uint8Array[] = [];
          const expected: number[] = [];
          for (const [body, takeNow, asView] of steps) {
            output.append(body);
            expected.push(...body);
            if (!takeNow) continue;
            const bytes = asView ? output.takeView() : output.take();
            if (asView) expect(bytes.constructor).toBe(Uint8Array);
            taken.push(bytes);
          }
          taken.push(output.takeView());
          expect(output.length).toBe(0);
          // Everything handed out, read only now: later appends (and new slabs) wrote over none of it.
          expect([...Buffer.concat(taken)]).toEqual(expected);
        },
      ),
    );
  });
});

describe('EndOfTickQueue', () => {
  it('flushes every writer queued in a tick once, in order, at the end of the tick', async () => {
    const queue = new EndOfTickQueue();
    const log: string[] = [];
    queue.add(writer('a', log));
    queue.add(writer('b', log));
    queue.add(writer('c', log));
    await Promise.resolve();
    expect(log).toEqual([]);
    await nextImmediate();
    expect(log).toEqual(['a', 'b', 'c']);
    await nextImmediate();
    expect(log).toEqual(['a', 'b', 'c']);
  });

  it('flushes a writer queued during a flush in the same pass, and every later tick too', async () => {
    const queue = new EndOfTickQueue();
    const log: string[] = [];
    const late = writer('late', log);
    queue.add(writer('a', log, () => queue.add(late)));
    queue.add(writer('b', log));
    await nextImmediate();
    expect(log).toEqual(['a', 'b', 'late']);
    queue.add(writer('again', log));
    await nextImmediate();
    expect(log).toEqual(['a', 'b', 'late', 'again']);
  });

  it('leaves a writer that keeps queueing itself to the next immediate after a few rounds', async () => {
    const queue = new EndOfTickQueue();
    const log: string[] = [];
    let left = 10;
    const again: EndOfTickWriter = writer('again', log, () => {
      if (--left > 0) queue.add(again);
    });
    queue.add(again);
    queue.flushAll();
    // The event loop goes on: the rest waits for later immediates.
    expect(log.length).toBeLessThan(10);
    const first = log.length;
    await nextImmediate();
    expect(log.length).toBeGreaterThan(first);
    for (let i = 0; i < 10 && log.length < 10; i++) await nextImmediate();
    expect(log).toHaveLength(10);
  });

  it('does not strand the writers after one whose flush throws', async () => {
    const queue = new EndOfTickQueue();
    const log: string[] = [];
    queue.add(writer('a', log));
    queue.add(
      writer('broken', log, () => {
        throw new Error('a bug in a flush');
      }),
    );
    queue.add(writer('c', log));
    queue.add(writer('d', log));
    // Run by hand (in the immediate the error would be uncaught, failing the test run).
    expect(() => queue.flushAll()).toThrow('a bug in a flush');
    expect(log).toEqual(['a', 'broken']);
    await nextImmediate();
    await nextImmediate();
    expect(log).toEqual(['a', 'broken', 'c', 'd']);
  });
});
