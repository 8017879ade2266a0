/**
 * Memory per key of the memory engine: 1,000,000 keys of 16 bytes with 100-byte values.
 * Run: `node --expose-gc --import tsx bench/engine-memory.ts [keys]`
 * Compare with Redis using the commands in ENGINES.md.
 */
import { MemoryEngine } from '../src/engines/index.js';

const KEYS = Number(process.argv[2] ?? 1_000_000);
const KEY_BYTES = 16;
const VALUE_BYTES = 100;

function collect(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc');
  for (let i = 0; i < 3; i++) gc();
}

function footprint(): number {
  const usage = process.memoryUsage();
  // arrayBuffers is a subset of external; count external once.
  return usage.heapUsed + usage.external;
}

/** 16-byte binary key: "key:" + 12 zero-padded decimal digits, like redis-benchmark's key:__rand_int__. */
function makeKey(i: number, into: Uint8Array): Uint8Array {
  const text = `key:${String(i).padStart(KEY_BYTES - 4, '0')}`;
  for (let j = 0; j < KEY_BYTES; j++) into[j] = text.charCodeAt(j);
  return into;
}

async function main(): Promise<void> {
  const engine = new MemoryEngine();
  const key = new Uint8Array(KEY_BYTES);
  const value = new Uint8Array(VALUE_BYTES).fill(0x78);
  collect();
  const before = footprint();
  for (let i = 0; i < KEYS; i++) await engine.set(makeKey(i, key), value);
  collect();
  const delta = footprint() - before;
  const stats = engine.stats();
  console.log(
    JSON.stringify({
      keys: engine.count(),
      payloadBytesPerKey: KEY_BYTES + VALUE_BYTES,
      bytesPerKey: Number((delta / KEYS).toFixed(1)),
      arenaBytesPerKey: Number((stats.arenaReservedBytes / KEYS).toFixed(1)),
      totalMiB: Number((delta / 2 ** 20).toFixed(1)),
    }),
  );
}

await main();
