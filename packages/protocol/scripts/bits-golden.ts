/**
 * Captures Redis's own GETBIT, BITCOUNT and BITPOS answers for `test/fixtures/bits-redis.json`,
 * the cases `test/bytes.test.ts` checks `getBit`, `bitCount` and `bitPos` against: sets each case's
 * value (or deletes the key) on a throwaway redis-server (`captureGolden`), sends the command
 * and records the answer.
 *
 *   pnpm --filter @dstore/protocol golden:bits [-- --cases 3000 --seed 11]
 *
 * Needs `redis-server` on the PATH (Debian: `apt-get install redis-server`). Seeded: a rerun
 * against the same Redis writes the same file. Only well-formed commands: argument errors are
 * the RESP front door's, tested with redis-cli.
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { captureGolden, type GoldenCase, seededRandom } from '../src/testing.js';

/** One row: the value in hex (null: no key), the command's arguments but the key, Redis's answer. */
type BitsCase = [valueHex: string | null, args: string[], answer: string];

const { values: flags } = parseArgs({
  options: { cases: { type: 'string', default: '3000' }, seed: { type: 'string', default: '11' } },
});
const output = new URL('../test/fixtures/bits-redis.json', import.meta.url);
const next = seededRandom(Number(flags.seed));
const int = (low: number, high: number): number => low + Math.floor(next() * (high - low + 1));
const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;

/** A value of 0-12 bytes: runs of 0x00 and 0xff (the bytes BITPOS skips), single bits, noise. */
function value(): Uint8Array | null {
  if (next() < 0.08) return null;
  return Uint8Array.from({ length: int(0, 12) }, () =>
    pick([0x00, 0x00, 0xff, 0xff, 1 << int(0, 7), 0xff ^ (1 << int(0, 7)), int(0, 255)]),
  );
}

/** An index around the value's edges, in bytes or bits, often negative. */
function index(length: number, unit: 'BYTE' | 'BIT'): string {
  const total = unit === 'BIT' ? length * 8 : length;
  return String(pick([int(-total - 3, total + 3), int(-total - 3, total + 3), 0, -1, total, -total - 20]));
}

function command(length: number): string[] {
  const unit = pick(['BYTE', 'BIT'] as const);
  switch (int(0, 2)) {
    case 0:
      return ['GETBIT', String(int(0, length * 8 + 20))];
    case 1: {
      if (next() < 0.2) return ['BITCOUNT'];
      const range = [index(length, unit), index(length, unit)];
      return next() < 0.3 ? ['BITCOUNT', ...range] : ['BITCOUNT', ...range, unit];
    }
    default: {
      const bit = String(int(0, 1));
      const shape = int(0, 3);
      if (shape === 0) return ['BITPOS', bit];
      if (shape === 1) return ['BITPOS', bit, index(length, 'BYTE')];
      if (shape === 2) return ['BITPOS', bit, index(length, 'BYTE'), index(length, 'BYTE')];
      return ['BITPOS', bit, index(length, unit), index(length, unit), unit];
    }
  }
}

const list = Array.from({ length: Number(flags.cases) }, (): GoldenCase => {
  const bytes = value();
  const args = command(bytes?.length ?? 0);
  const valueHex = bytes === null ? null : Buffer.from(bytes).toString('hex');
  return {
    value: bytes === null ? null : Buffer.from(bytes).toString('latin1'),
    command: [args[0]!, 'k', ...args.slice(1)],
    row: (answer): BitsCase => [valueHex, args, answer],
  };
});
console.log(await captureGolden(fileURLToPath(output), list));
