import { afterEach, describe, expect, it } from 'vitest';
import { crashTarget, runCrashRounds } from './crash-harness.js';
import { Resources } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

/** More rounds locally with CRASH_ROUNDS=n; `pnpm crash:loop` runs 50. */
const ROUNDS = Number(process.env.CRASH_ROUNDS ?? 5);

describe('crash consistency (lmdb, durability flush)', () => {
  it(`keeps every acknowledged write across ${ROUNDS} SIGKILLs under concurrent load`, async () => {
    const dataDir = resources.tempDir('dstore-crash-');
    const args = [
      '--port',
      '0',
      '--id',
      'crash-1',
      '--engine',
      'lmdb',
      '--data-dir',
      dataDir,
      '--durability',
      'flush',
      '--log-level',
      'warn',
    ];
    const reports = await runCrashRounds({
      rounds: ROUNDS,
      start: async () => crashTarget(await resources.spawnNode(args)),
      log: (line) => process.stderr.write(`${line}\n`),
    });
    expect(reports).toHaveLength(ROUNDS);
    // The load must really have been running at each kill, or the round proves nothing.
    for (const report of reports) expect(report.acknowledged).toBeGreaterThan(0);
  }, 120_000);
});
