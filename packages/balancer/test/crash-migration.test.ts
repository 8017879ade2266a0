/**
 * Crash-safe migration: SIGKILL the balancer, an old owner or a new owner at a random point of a
 * join or of a graceful leave, restart it, and check every key's history over the whole run (reads,
 * writes and deletes from several clients): no acknowledged write lost, no stale read, no
 * resurrected delete, and nothing pending on any node once the transition completes.
 *
 * Node crashes run on lmdb only: a memory node's keys die with its process (that is what
 * "acknowledged" means for the memory engine without replication), so only the balancer is killed
 * under the memory engine. The `direct` cases run the load with clients that route straight to
 * the nodes (`routing: 'direct'`): while the balancer is down they keep going on their last map,
 * and the nodes' fences and redirects must keep the same history correct.
 */
import type { DstoreClient } from '@dstore/client';
import { afterEach, describe, expect, it } from 'vitest';
import { asRequester, directClient, withMap } from './direct-client.js';
import {
  BALANCER_CLI,
  type BalancerReady,
  clientLink,
  type NodeReady,
  nodeStats,
  Resources,
  ringOf,
  type Spawned,
  sleep,
  spawnCli,
  spawnNode,
  temporaryDir,
  waitFor,
} from './helpers.js';
import { finalCheck, History, type Requester, startLoad } from './history.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

type Engine = 'memory' | 'lmdb';
type Change = 'join' | 'leave';
type Victim = 'balancer' | 'old owner' | 'new owner';
type Routing = 'balancer' | 'direct';

const cases: { engine: Engine; change: Change; victim: Victim; routing?: Routing }[] = [
  { engine: 'lmdb', change: 'join', victim: 'new owner' },
  { engine: 'lmdb', change: 'join', victim: 'old owner' },
  { engine: 'lmdb', change: 'join', victim: 'balancer' },
  { engine: 'lmdb', change: 'leave', victim: 'old owner' },
  { engine: 'lmdb', change: 'leave', victim: 'new owner' },
  { engine: 'lmdb', change: 'leave', victim: 'balancer' },
  { engine: 'memory', change: 'join', victim: 'balancer' },
  { engine: 'memory', change: 'leave', victim: 'balancer' },
  { engine: 'lmdb', change: 'join', victim: 'balancer', routing: 'direct' },
  { engine: 'lmdb', change: 'join', victim: 'old owner', routing: 'direct' },
  { engine: 'lmdb', change: 'leave', victim: 'new owner', routing: 'direct' },
];

describe.each(cases)(
  'SIGKILL of the $victim during a $change ($engine, $routing clients)',
  ({ engine, change, victim, routing = 'balancer' }) => {
    it('loses no acknowledged write, serves no stale read, resurrects no delete, leaves nothing pending', {
      timeout: 150_000,
    }, async () => {
      const balancerDir = temporaryDir(resources, 'dstore-crash-bal-');
      const balancerArgs = (port: number) => [
        '--port',
        String(port),
        '--admin-port',
        '0',
        '--replication-factor',
        '1',
        '--data-dir',
        balancerDir,
        '--heartbeat-timeout',
        '1000',
        '--log-level',
        'warn',
      ];
      let balancer = await spawnCli<BalancerReady>(resources, BALANCER_CLI, balancerArgs(0));
      const port = balancer.ready.port;
      const dataDirs = new Map<string, string>();
      const nodes = new Map<string, Spawned<NodeReady>>();
      // Slow streams, so the kill lands in the middle of the migration.
      const startNode = async (id: string) => {
        if (!dataDirs.has(id)) dataDirs.set(id, temporaryDir(resources, `dstore-crash-${id}-`));
        const extra = ['--migration-rate', '1000', '--heartbeat-interval', '200'];
        if (engine === 'lmdb') extra.push('--engine', 'lmdb', '--data-dir', dataDirs.get(id)!);
        nodes.set(id, await spawnNode(resources, id, port, extra));
      };
      // Started at once (about a second each one after another): they join an empty ring, and the
      // faults below come once the three of them are settled.
      await Promise.all(['node-1', 'node-2', 'node-3'].map(startNode));
      const settled = async (ids: readonly string[]) => {
        await waitFor(
          async () => {
            const ring = await ringOf(balancer);
            const inRing = ring.nodes.filter((node) => node.share > 0);
            return (
              ring.map.transition === null &&
              inRing.length === ids.length &&
              ids.every((id) => inRing.some((node) => node.id === id && node.status === 'up'))
            );
          },
          `ring of ${ids.join(', ')}`,
          90_000,
        );
      };
      await settled(['node-1', 'node-2', 'node-3']);

      const history = new History(2000);
      const startedAt = performance.now();
      let killedAt = 0;
      const directClients: DstoreClient[] = [];
      let links: Requester[];
      if (routing === 'direct') {
        for (let i = 0; i < 3; i++) directClients.push(await withMap(directClient(resources, port)));
        links = directClients.map((client) => asRequester(client, history.keys));
      } else {
        const peerLinks = Array.from({ length: 3 }, () => clientLink(resources, port));
        await waitFor(() => peerLinks.every((link) => link.isReady), 'clients connected');
        links = peerLinks;
      }
      const load = await startLoad(history, links, { deleteRatio: 0.1 });

      if (change === 'join') await startNode('node-4');
      else nodes.get('node-2')!.child.kill('SIGTERM');
      await waitFor(
        async () => (await ringOf(balancer)).map.transition?.phase === 'stream',
        'migration running',
      );
      await sleep(Math.floor(Math.random() * 400));

      const victimId =
        victim === 'balancer'
          ? undefined
          : change === 'join'
            ? victim === 'new owner'
              ? 'node-4'
              : 'node-1'
            : victim === 'old owner'
              ? 'node-2'
              : 'node-1';
      killedAt = performance.now() - startedAt;
      if (victimId === undefined) {
        balancer.child.kill('SIGKILL');
        await balancer.exited;
        balancer = await spawnCli<BalancerReady>(resources, BALANCER_CLI, balancerArgs(port));
      } else {
        const node = nodes.get(victimId)!;
        node.child.kill('SIGKILL');
        await node.exited;
        await sleep(200);
        await startNode(victimId);
      }
      const finalIds = change === 'join' ? ['node-1', 'node-2', 'node-3', 'node-4'] : ['node-1', 'node-3'];
      await settled(finalIds);
      await load.stop();
      const final = clientLink(resources, port);
      await waitFor(() => final.isReady, 'final client');
      const lost = await finalCheck(history, final);
      // On failure, the histories of a few offending keys (ms since the load began) help find why.
      for (const line of [...history.anomalies(), ...lost].slice(0, 3)) {
        const key = Number(/load-(\d+)/.exec(line)?.[1]);
        console.log(line, `(SIGKILL at ${Math.round(killedAt)} ms)`, history.describe(key, startedAt));
      }
      expect(history.anomalies()).toEqual([]);
      expect(lost).toEqual([]);
      for (const client of directClients) {
        // The load really went to the nodes, within the redirect bound.
        expect(client.routingStats!.direct).toBeGreaterThan(0);
        expect(client.routingStats!.maxRedirectsPerRequest).toBeLessThanOrEqual(5);
      }
      // The transition is over everywhere: no node keeps pending ranges (nor their tombstones).
      for (const id of finalIds) {
        const stats = await nodeStats(nodes.get(id)!.ready.port);
        expect(stats['migration.pending_ranges'], `${id} pending ranges`).toBe(0);
        expect(stats.tombstones, `${id} tombstones`).toBe(0);
      }
    });
  },
);
