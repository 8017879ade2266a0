/**
 * Migration soak: the CI migration-under-load scenario at 200,000+ operations (two joins and a
 * graceful leave, then rounds of "a new node joins, the oldest leaves by SIGTERM" for as long as
 * the load runs; continuous reads and writes, per-key history check; with lmdb, every node is then
 * SIGKILLed and restarted on its data dir and checked again).
 *
 *   pnpm build
 *   npx tsx scripts/migration-soak.ts [--ops 200000] [--engine memory|lmdb] [--clients 8] [--keys 20000] [--rounds 1000]
 *
 * Exits 0 when no acknowledged write was lost and no read was stale, 1 otherwise.
 */
import { Resources } from '../packages/balancer/test/helpers.js';
import { runMigrationScenario } from '../packages/balancer/test/migration-load.js';

function flag(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1]! : fallback;
}

async function main(): Promise<void> {
  const engine = flag('engine', 'memory') === 'lmdb' ? 'lmdb' : 'memory';
  const ops = Number(flag('ops', '200000'));
  const clients = Number(flag('clients', '8'));
  const keys = Number(flag('keys', '20000'));
  const resources = new Resources();
  try {
    const report = await runMigrationScenario({
      resources,
      engine,
      ops,
      clients,
      keys,
      restart: engine === 'lmdb',
      rounds: Number(flag('rounds', '1000')),
      log: (line) => console.log(line),
    });
    console.log(
      JSON.stringify(
        {
          engine,
          ops: report.ops,
          reads: report.reads,
          writes: report.writes,
          failedOps: report.failedOps,
          indeterminateWrites: report.indeterminateWrites,
          staleReads: report.staleReads.length,
          lostWrites: report.lostWrites.length,
          lostAfterRestart: report.lostAfterRestart.length,
          joins: report.joins.length,
          joinFractions: report.joins.map(
            (join) =>
              `${join.node} ${(join.fraction * 100).toFixed(1)}% (ideal ${(join.ideal * 100).toFixed(1)}%)`,
          ),
          everyJoinOnlyToNewNode: report.joins.every((join) => join.onlyToNewNode),
          seconds: Math.round(report.durationMs / 100) / 10,
          opsPerSecond: Math.round(report.ops / (report.durationMs / 1000)),
        },
        null,
        2,
      ),
    );
    for (const line of [...report.staleReads, ...report.lostWrites, ...report.lostAfterRestart].slice(
      0,
      20,
    )) {
      console.log(line);
    }
    const clean =
      report.staleReads.length === 0 &&
      report.lostWrites.length === 0 &&
      report.lostAfterRestart.length === 0;
    process.exitCode = clean ? 0 : 1;
  } finally {
    await resources.releaseAll();
  }
}

void main();
