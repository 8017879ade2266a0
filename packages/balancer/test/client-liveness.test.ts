/**
 * A hung peer (SIGSTOPped: its sockets stay open, TCP says nothing) seen from @dstore/client:
 * after a command times out the client PINGs the peer, and one that does not answer is left.
 * A balancer is left for the next of `servers`; a node of a direct client for the balancer
 * route, which answers its keys with UNAVAILABLE (not executed) instead of a TIMEOUT (outcome
 * unknown) per command for as long as the node is stopped. Real processes, real sockets.
 */
import { type ClientOptions, createClient, type DstoreClient, DstoreError, ErrorCode } from '@dstore/client';
import { afterEach, describe, expect, it } from 'vitest';
import { directClient, withMap } from './direct-client.js';
import {
  type NodeReady,
  Resources,
  type Spawned,
  spawnBalancer,
  spawnNode,
  startBalancer,
  waitFor,
  waitForNodesUp,
} from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

/** Short deadlines, so that a stopped peer is found within the test's polling bound. */
const FAST = { commandTimeout: 1000, connectTimeout: 1000 } as const;

function client(options: ClientOptions): DstoreClient {
  const created = createClient(options);
  resources.add(() => created.disconnect());
  return created;
}

/** What `promise` settled with: its value, or the DstoreError it failed with (anything else throws). */
async function outcome<T>(promise: Promise<T>): Promise<T | DstoreError> {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof DstoreError) return error;
    throw error;
  }
}

describe('a hung peer is left', () => {
  it('a SIGSTOPped balancer: the client moves to the next of its servers', async () => {
    const first = await spawnBalancer(resources);
    const second = await spawnBalancer(resources);
    const both = client({
      servers: [first, second].map(({ ready }) => ({ host: '127.0.0.1', port: ready.port })),
      ...FAST,
    });
    await both.connect();
    expect(both.server).toBe(`127.0.0.1:${first.ready.port}`);
    expect(await both.ping()).toBe('PONG');

    first.child.kill('SIGSTOP');
    const failures: DstoreError[] = [];
    await waitFor(async () => {
      const answer = await outcome(both.ping());
      if (answer instanceof DstoreError) failures.push(answer);
      return answer === 'PONG';
    }, 'a PONG from the second balancer');
    expect(both.server).toBe(`127.0.0.1:${second.ready.port}`);
    // Meanwhile every command failed with a typed error of the hung connection, none hung.
    const expected: readonly string[] = [
      ErrorCode.TIMEOUT,
      ErrorCode.CONNECTION_CLOSED,
      ErrorCode.UNAVAILABLE,
    ];
    expect(failures.filter((failure) => !expected.includes(failure.code))).toEqual([]);
    first.child.kill('SIGCONT');
  });

  it('a SIGSTOPped node of a direct client: its keys get UNAVAILABLE (not executed) through the balancer, then are served again', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1, heartbeatTimeoutMs: 600 });
    const nodes = new Map<string, Spawned<NodeReady>>();
    for (const id of ['node-1', 'node-2'])
      nodes.set(id, await spawnNode(resources, id, balancer.address.port));
    await waitForNodesUp(balancer, 2);
    const direct = await withMap(directClient(resources, balancer.address.port, FAST));
    const key = Array.from({ length: 100 }, (_, i) => `k:${i}`).find(
      (name) => balancer.ring.get(name) === 'node-2',
    )!;
    expect(await direct.set(key, `v-${key}`)).toBe('OK');

    const stopped = nodes.get('node-2')!;
    stopped.child.kill('SIGSTOP');
    const seen = new Set<string>();
    await waitFor(
      async () => {
        const answer = await outcome(direct.get(key));
        if (!(answer instanceof DstoreError)) throw new Error(`a stopped node's key was answered: ${answer}`);
        seen.add(answer.code);
        return answer.code === ErrorCode.UNAVAILABLE && answer.notExecuted;
      },
      "UNAVAILABLE for the stopped node's key",
      20_000,
    );
    const expected: readonly string[] = [
      ErrorCode.TIMEOUT,
      ErrorCode.CONNECTION_CLOSED,
      ErrorCode.UNAVAILABLE,
    ];
    expect([...seen].filter((code) => !expected.includes(code))).toEqual([]);

    stopped.child.kill('SIGCONT');
    await waitFor(
      async () => {
        const answer = await outcome(direct.get(key));
        return (
          !(answer instanceof DstoreError) && answer !== null && Buffer.from(answer).toString() === `v-${key}`
        );
      },
      'the key served again after SIGCONT',
      20_000,
    );
  });
});
