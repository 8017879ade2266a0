/**
 * Noisy neighbour: one client floods 1 MiB SETs over several connections while a quiet client does
 * small GETs and SETs through the same balancer and node. Only the absence of errors for the quiet
 * client is asserted (its latency is a benchmark figure: BENCHMARKS.md, "Noisy neighbour").
 */
import { Op } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { RingView } from '../src/index.js';
import { attempt, connect, Resources, spawnNode, startBalancer, waitFor, waitForNodesUp } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

const FLOOD_CONNECTIONS = 2;
const FLOOD_PIPELINE = 6;
const FLOOD_VALUE_BYTES = 1_000_000;

describe('fairness between client connections', () => {
  it('a client flooding 1 MiB SETs does not make a quiet client fail', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    await spawnNode(resources, 'node-1', balancer.address.port);
    await waitForNodesUp(balancer, 1);
    const quiet = await connect(resources, balancer.address.port);
    const flooders = await Promise.all(
      Array.from({ length: FLOOD_CONNECTIONS }, () => connect(resources, balancer.address.port)),
    );
    const big = new Uint8Array(FLOOD_VALUE_BYTES).fill(7);
    let flooding = true;
    let floodAnswers = 0;
    const floods = flooders.map(async (connection, c) => {
      while (flooding) {
        await Promise.all(
          Array.from({ length: FLOOD_PIPELINE }, (_, i) =>
            attempt(connection, { op: Op.SET, key: Buffer.from(`flood-${c}-${i}`), value: big }).then(() => {
              floodAnswers++;
            }),
          ),
        );
      }
    });
    try {
      await waitFor(() => floodAnswers >= FLOOD_CONNECTIONS * FLOOD_PIPELINE, 'the flood to run', 30_000);
      const failures: string[] = [];
      for (let i = 0; i < 40; i++) {
        const key = Buffer.from(`quiet-${i % 20}`);
        const set = await attempt(quiet, { op: Op.SET, key, value: Buffer.from(`v${i}`) });
        if (!('op' in set) || set.op !== Op.OK) failures.push(`SET: ${String((set as Error).message)}`);
        const get = await attempt(quiet, { op: Op.GET, key });
        if (!('op' in get) || get.op !== Op.VALUE) failures.push(`GET: ${String((get as Error).message)}`);
      }
      expect(failures).toEqual([]);
    } finally {
      flooding = false;
      await Promise.all(floods);
    }
  }, 60_000);

  it('/ring shows each node storage condition from its heartbeats', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    await spawnNode(resources, 'node-1', balancer.address.port, ['--max-memory', '8m']);
    await waitForNodesUp(balancer, 1);
    const ring = async (): Promise<RingView> =>
      (await (await fetch(`http://127.0.0.1:${balancer.address.adminPort}/ring`)).json()) as RingView;
    await waitFor(() => balancer.membership.node('node-1')?.storage !== undefined, 'a heartbeat');
    const node = (await ring()).nodes.find((n) => n.id === 'node-1');
    expect(node?.storage).toMatchObject({ state: 'ok', reason: '' });
    expect(node?.storage?.availableBytes).toBeGreaterThan(0);
    expect(node?.storage?.availableBytes).toBeLessThanOrEqual(8 * 2 ** 20);
  });
});
