/**
 * A migration whose new owner refuses the keys (its lmdb map is full) must not finish: finishing
 * would route the stream's keys to a node that never got them. It stalls, loudly (`/ring`
 * migration.stalled, the metric), every key stays readable through the old owner, and once the
 * new owner restarts with room the stream moves and the migration finishes with every key intact.
 */
import { join } from 'node:path';
import { Op, type PeerLink, toBytes } from '@dstore/protocol';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BALANCER_CLI,
  type BalancerReady,
  clientLink,
  Resources,
  ringOf,
  spawnCli,
  spawnNode,
  temporaryDir,
  waitFor,
  waitForRing,
} from './helpers.js';

const KEYS = 3000;
/** 2 KiB values: the joining node's share (about a quarter, 1.5 MiB) cannot fit its 1 MiB map. */
const valueFor = (i: number): string => `${i}:`.padEnd(2048, 'v');

const resources = new Resources();
afterAll(() => resources.releaseAll());

async function writeAll(link: PeerLink): Promise<void> {
  for (let start = 0; start < KEYS; start += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, KEYS - start) }, (_, offset) => {
        const i = start + offset;
        return link.request({ op: Op.SET, key: toBytes(`stall-${i}`), value: toBytes(valueFor(i)) });
      }),
    );
  }
}

/** The keys whose value read back through the balancer is not the one written. */
async function wrongKeys(link: PeerLink): Promise<string[]> {
  const wrong: string[] = [];
  for (let start = 0; start < KEYS; start += 100) {
    const answers = await Promise.all(
      Array.from({ length: Math.min(100, KEYS - start) }, (_, offset) =>
        link.request({ op: Op.GET, key: toBytes(`stall-${start + offset}`) }),
      ),
    );
    answers.forEach((answer, offset) => {
      const i = start + offset;
      const value = answer.op === Op.VALUE && answer.value ? Buffer.from(answer.value).toString() : null;
      if (value !== valueFor(i)) wrong.push(`stall-${i}`);
    });
  }
  return wrong;
}

describe('a migration the new owner refuses', () => {
  it('stalls with every key readable, and finishes once the new owner has room', async () => {
    const dir = temporaryDir(resources, 'dstore-stall-');
    const balancer = await spawnCli<BalancerReady>(resources, BALANCER_CLI, [
      '--port',
      '0',
      '--admin-port',
      '0',
      '--replication-factor',
      '1',
      '--data-dir',
      join(dir, 'map'),
      '--log-level',
      'fatal',
    ]);
    for (const id of ['node-1', 'node-2', 'node-3']) await spawnNode(resources, id, balancer.ready.port);
    await waitForRing(balancer, ['node-1', 'node-2', 'node-3']);
    const link = clientLink(resources, balancer.ready.port);
    await link.whenReady(10_000);
    await writeAll(link);

    const lmdb = ['--engine', 'lmdb', '--data-dir', join(dir, 'node-4')];
    const full = await spawnNode(resources, 'node-4', balancer.ready.port, [...lmdb, '--map-size', '1m']);
    await waitFor(
      async () => (await ringOf(balancer)).migration.stalled != null,
      'a stalled migration',
      60_000,
    );
    const stalled = await ringOf(balancer);
    expect(stalled.migration.stalled).toMatchObject({ to: 'node-4', code: 'OUT_OF_SPACE' });
    expect(stalled.map.transition).not.toBeNull();
    const metrics = await (await fetch(`http://127.0.0.1:${balancer.ready.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/^dstore_balancer_migration_stalled 1$/m);
    // Stalled, not finished: every key is still served, from the old owners.
    expect(await wrongKeys(link)).toEqual([]);

    // The operator gives the new owner room: the same data dir, a larger map.
    full.child.kill('SIGKILL');
    await full.exited;
    await spawnNode(resources, 'node-4', balancer.ready.port, [...lmdb, '--map-size', '64m']);
    const settled = await waitForRing(balancer, ['node-1', 'node-2', 'node-3', 'node-4']);
    expect(settled.migration.stalled).toBeNull();
    expect(await wrongKeys(link)).toEqual([]);
  }, 120_000);
});
