import { describe, expect, it } from 'vitest';
import { MessageCodec } from '../src/index.js';
import { type FeedOutcome, feed, hostileInput } from './fuzz-inputs.js';
import { seededRandom } from './helpers.js';

const INPUTS = 100_000;
const MEMORY_BOUND_BYTES = 64 * 1024 * 1024;

function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) gc();
}

describe('fuzz: FrameDecoder + MessageCodec', () => {
  it(`survives ${INPUTS} hostile inputs with typed errors only and bounded memory`, () => {
    const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
    // Printed so a failure can be replayed with FUZZ_SEED=<seed>.
    console.log(`fuzz seed ${seed} (replay with FUZZ_SEED=${seed})`);
    const random = seededRandom(seed);
    const codec = new MessageCodec();
    const outcome: FeedOutcome = { messages: 0, errors: 0 };
    collectGarbage();
    const before = process.memoryUsage();
    for (let index = 0; index < INPUTS; index++) {
      const input = hostileInput(random);
      try {
        feed(input, codec, random, outcome);
      } catch (error) {
        throw new Error(
          `seed ${seed} input ${index} (${Buffer.from(input.subarray(0, 64)).toString('hex')}): ${String(error)}`,
        );
      }
    }
    collectGarbage();
    const after = process.memoryUsage();
    expect(outcome.messages).toBeGreaterThan(0);
    expect(outcome.errors).toBeGreaterThan(INPUTS / 10);
    expect(after.heapUsed - before.heapUsed).toBeLessThan(MEMORY_BOUND_BYTES);
    expect(after.rss - before.rss).toBeLessThan(MEMORY_BOUND_BYTES);
  });
});
