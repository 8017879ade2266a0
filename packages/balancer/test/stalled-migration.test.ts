/**
 * A new owner without room for its keys. At JOIN, a new member that could not hold its share of
 * the data is refused (OUT_OF_SPACE, listed in `/ring` refusedJoins): nothing moves, nothing else
 * is refused, and it joins once restarted with room. A member's weight raised past its room is
 * held (the member keeps its weight and serves; the request is listed). A migration whose new
 * owner still refuses the keys (here: an lmdb node, which stores these values on overflow pages,
 * twice what the memory members report using, so the estimate lets it join) must not finish:
 * finishing would route the stream's keys to a node that never got them. It stalls, loudly
 * (`/ring` migration.stalled, the metric), every key stays readable through the old owner, and
 * once the new owner restarts with room the stream moves and the migration finishes with every
 * key intact.
 */
import { join } from 'node:path';
import { Op, type PeerLink, toBytes } from '@dstore/protocol';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BALANCER_CLI,
  type BalancerReady,
  balancerArgs,
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
/** 2,100-byte values: past half an lmdb page, each takes a 4 KiB overflow page on an lmdb node. */
const VALUE_BYTES = 2100;
const valueFor = (i: number): string => `${i}:`.padEnd(VALUE_BYTES, 'v');

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

describe('a new owner without room', () => {
  it('is refused at JOIN; a raised weight is held; a migration it refuses stalls with every key readable, and finishes once it has room', async () => {
    const dir = temporaryDir(resources, 'dstore-stall-');
    const balancer = await spawnCli<BalancerReady>(
      resources,
      BALANCER_CLI,
      balancerArgs(['--data-dir', join(dir, 'map'), '--log-level', 'fatal']),
    );
    for (const id of ['node-1', 'node-2', 'node-3']) await spawnNode(resources, id, balancer.ready.port);
    await waitForRing(balancer, ['node-1', 'node-2', 'node-3']);
    const link = clientLink(resources, balancer.ready.port);
    await link.whenReady(10_000);
    await writeAll(link);
    // The JOIN check counts what the members last reported using: wait until they report the data.
    await waitFor(
      async () =>
        (await ringOf(balancer)).nodes.reduce((sum, node) => sum + (node.storage?.usedBytes ?? 0), 0) >=
        KEYS * VALUE_BYTES,
      'the nodes reporting the data in their heartbeats',
    );

    const lmdb = (id: string) => ['--engine', 'lmdb', '--data-dir', join(dir, id)];
    const tooSmall = await spawnNode(resources, 'node-4', balancer.ready.port, [
      ...lmdb('node-4'),
      '--map-size',
      '1m',
    ]);
    await waitFor(
      async () => (await ringOf(balancer)).refusedJoins.some((refusal) => refusal.node === 'node-4'),
      'the JOIN of node-4 refused',
    );
    const refused = await ringOf(balancer);
    expect(refused.refusedJoins).toEqual([expect.objectContaining({ node: 'node-4', code: 'OUT_OF_SPACE' })]);
    expect(refused.refusedJoins[0]!.message).toMatch(/node 'node-4' can take .* but would hold about/);
    // Refused, not stalled: the ring and the map are as before, every key served.
    expect(refused.nodes.map((node) => node.id).sort()).toEqual(['node-1', 'node-2', 'node-3']);
    expect(refused.map.transition).toBeNull();
    expect(await wrongKeys(link)).toEqual([]);

    // Room for the estimate (the memory members' usage), not for lmdb's pages: the stream stalls.
    tooSmall.child.kill('SIGKILL');
    await tooSmall.exited;
    const full = await spawnNode(resources, 'node-4', balancer.ready.port, [
      ...lmdb('node-4'),
      '--map-size',
      '2500k',
    ]);
    await waitFor(
      async () => (await ringOf(balancer)).migration.stalled != null,
      'a stalled migration',
      60_000,
    );
    const stalled = await ringOf(balancer);
    expect(stalled.refusedJoins).toEqual([]);
    expect(stalled.migration.stalled).toMatchObject({ to: 'node-4', code: 'OUT_OF_SPACE' });
    expect(stalled.map.transition).not.toBeNull();
    const metrics = await (await fetch(`http://127.0.0.1:${balancer.ready.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/^dstore_balancer_migration_stalled 1$/m);
    // Stalled, not finished: every key is still served, from the old owners.
    expect(await wrongKeys(link)).toEqual([]);

    // The operator gives the new owner room: the same data dir, a larger map.
    full.child.kill('SIGKILL');
    await full.exited;
    await spawnNode(resources, 'node-4', balancer.ready.port, [...lmdb('node-4'), '--map-size', '64m']);
    const settled = await waitForRing(balancer, ['node-1', 'node-2', 'node-3', 'node-4']);
    expect(settled.migration.stalled).toBeNull();
    expect(await wrongKeys(link)).toEqual([]);

    // A member asking for a weight whose share it could not hold keeps its weight and serves.
    const five = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5'];
    const light = await spawnNode(resources, 'node-5', balancer.ready.port, [
      ...lmdb('node-5'),
      '--map-size',
      '5m',
    ]);
    await waitForRing(balancer, five);
    light.child.kill('SIGKILL');
    await light.exited;
    const heavy = ['--weight', '20'];
    const held = await spawnNode(resources, 'node-5', balancer.ready.port, [
      ...lmdb('node-5'),
      '--map-size',
      '5m',
      ...heavy,
    ]);
    await waitFor(
      async () => (await ringOf(balancer)).refusedJoins.some((refusal) => refusal.node === 'node-5'),
      'the weight of node-5 held',
    );
    const holding = await waitForRing(balancer, five);
    expect(holding.nodes.find((node) => node.id === 'node-5')?.weight).toBe(1);
    expect(holding.refusedJoins).toEqual([
      expect.objectContaining({
        node: 'node-5',
        code: 'OUT_OF_SPACE',
        message: expect.stringMatching(
          /^weight 20 not applied \(kept at 1\): node 'node-5' can take .* but at weight 20 would hold about/,
        ),
      }),
    ]);
    expect(await wrongKeys(link)).toEqual([]);
    // With room, the weight applies and the hold ends.
    held.child.kill('SIGKILL');
    await held.exited;
    await spawnNode(resources, 'node-5', balancer.ready.port, [
      ...lmdb('node-5'),
      '--map-size',
      '64m',
      ...heavy,
    ]);
    await waitFor(
      async () => (await ringOf(balancer)).nodes.find((node) => node.id === 'node-5')?.weight === 20,
      'the weight of node-5 applied',
    );
    const heavier = await waitForRing(balancer, five);
    expect(heavier.refusedJoins).toEqual([]);
    expect(await wrongKeys(link)).toEqual([]);
  }, 180_000);
});
