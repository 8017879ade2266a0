/**
 * Migration under continuous load (CI size): clients write and read while a 4th and a 5th node
 * join and one leaves gracefully; no acknowledged write is lost and no read is stale. With lmdb,
 * every node is then SIGKILLed and restarted on its data dir and the same checks pass.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Resources } from './helpers.js';
import { runMigrationScenario } from './migration-load.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

describe.each(['memory', 'lmdb'] as const)('migration under load on %s', (engine) => {
  it('loses no acknowledged write and serves no stale read across two joins and a graceful leave', async () => {
    const report = await runMigrationScenario({
      resources,
      engine,
      ops: 20_000,
      clients: 8,
      keys: 2000,
      restart: engine === 'lmdb',
      log: (line) => console.log(`[${engine}] ${line}`),
    });
    console.log(
      `[${engine}] ${report.ops} ops (${report.reads} reads, ${report.writes} writes) in ${Math.round(report.durationMs)} ms; ` +
        `${report.failedOps} failed, ${report.indeterminateWrites} indeterminate`,
    );
    expect(report.ops).toBeGreaterThanOrEqual(20_000);
    expect(report.staleReads).toEqual([]);
    expect(report.lostWrites).toEqual([]);
    expect(report.lostAfterRestart).toEqual([]);
    for (const join of report.joins) {
      expect(join.onlyToNewNode).toBe(true);
      // About 1/n of the keys: within a generous band of the ideal (vnode placement varies).
      expect(join.fraction).toBeGreaterThan(join.ideal * 0.5);
      expect(join.fraction).toBeLessThan(join.ideal * 1.6);
    }
  }, 120_000);
});
