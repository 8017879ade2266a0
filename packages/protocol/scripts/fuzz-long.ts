/**
 * Long fuzz run: `pnpm --filter @dstore/protocol fuzz:long [inputs] [seed]`.
 * Default 1,000,000 inputs with a time-based seed; prints progress and the seed to replay.
 */
import { MessageCodec } from '../src/index.js';
import { type FeedOutcome, feed, hostileInput } from '../test/fuzz-inputs.js';
import { seededRandom } from '../test/helpers.js';

const inputs = Number(process.argv[2] ?? 1_000_000);
const seed = Number(process.argv[3] ?? process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
const random = seededRandom(seed);
const codec = new MessageCodec();
const outcome: FeedOutcome = { messages: 0, errors: 0 };
const startRss = process.memoryUsage().rss;
const started = performance.now();
console.log(`fuzz:long ${inputs} inputs, seed ${seed}`);
for (let index = 0; index < inputs; index++) {
  const input = hostileInput(random);
  try {
    feed(input, codec, random, outcome);
  } catch (error) {
    console.error(`FAILED at input ${index}, seed ${seed}: ${String(error)}`);
    console.error(`input (hex, first 256 bytes): ${Buffer.from(input.subarray(0, 256)).toString('hex')}`);
    process.exit(1);
  }
  if ((index + 1) % 100_000 === 0) {
    const rssMb = (process.memoryUsage().rss - startRss) / 2 ** 20;
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `${index + 1} inputs, ${outcome.messages} messages, ${outcome.errors} typed errors, ` +
        `rss +${rssMb.toFixed(1)} MiB, ${seconds.toFixed(1)} s`,
    );
  }
}
console.log(`ok: ${inputs} inputs, no untyped failure (seed ${seed})`);
