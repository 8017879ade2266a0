/**
 * What the data-model tests (data-model.test.ts, versions.test.ts) share: a cluster of real
 * storage nodes behind an in-process balancer, clients of it (through the balancer or direct), the
 * `dstore` CLI, and work in bounded groups. Everything started is released with `resources`.
 */

import { execFile } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type ClientOptions, createClient, type DstoreClient } from '@dstore/client';
import type { Balancer, BalancerOptions } from '../src/index.js';
import { withMap } from './direct-client.js';
import {
  type NodeReady,
  type Resources,
  type Spawned,
  spawnNode,
  startBalancer,
  waitFor,
  waitForNodesUp,
} from './helpers.js';

/** The built `dstore` CLI of @dstore/client. */
const DSTORE_CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../../client/dist/cli.js');

/** Runs the `dstore` CLI; resolves its stdout, stderr and exit code (never rejects on a non-zero exit). */
export async function dstore(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [DSTORE_CLI, ...args], {
      timeout: 20_000,
    });
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string; code?: number };
    return { stdout: failed.stdout ?? '', stderr: failed.stderr ?? '', code: failed.code ?? -1 };
  }
}

/** A client of the balancer at `port` (routing through it, or directly to the nodes), closed at release. */
export async function clientOf(
  resources: Resources,
  port: number,
  routing: 'balancer' | 'direct',
  extra: ClientOptions = {},
): Promise<DstoreClient> {
  const client = createClient({ host: '127.0.0.1', port, routing, ...extra });
  resources.add(() => client.disconnect());
  await client.connect();
  return routing === 'direct' ? withMap(client) : client;
}

/** A balancer and `nodes` real storage nodes (memory engine, `extra` arguments), all up. */
export async function cluster(
  resources: Resources,
  nodes: number,
  extra: string[] = [],
  options: BalancerOptions = {},
): Promise<{ balancer: Balancer; spawned: Spawned<NodeReady>[] }> {
  const balancer = await startBalancer(resources, { replicationFactor: 1, ...options });
  // Started at once (about a second each one after another), in the array in id order; the tests
  // begin once all of them are up in a settled ring.
  const spawned: Spawned<NodeReady>[] = await Promise.all(
    Array.from({ length: nodes }, (_, i) =>
      spawnNode(resources, `node-${i + 1}`, balancer.address.port, extra),
    ),
  );
  await waitForNodesUp(balancer, nodes);
  return { balancer, spawned };
}

/** Runs `work` for 0..count-1, 50 at a time (the connection's in-flight bound is 1024). */
export async function inGroups(count: number, work: (index: number) => Promise<unknown>): Promise<void> {
  for (let start = 0; start < count; start += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, count - start) }, (_, offset) => work(start + offset)),
    );
  }
}

/** Waits until keys stream on the announced ring (and a direct client routes on it). */
export async function keysMoving(balancer: Balancer, client: DstoreClient, routing: string): Promise<void> {
  await waitFor(() => {
    const topology = balancer.membership.topology;
    return topology.moves !== undefined && !topology.announcing;
  }, 'the keys to stream on the announced ring');
  if (routing === 'direct') {
    await waitFor(
      () => client.routingStats?.mapEpoch === balancer.membership.topology.epoch,
      'the client to route on the new map',
    );
  }
}
