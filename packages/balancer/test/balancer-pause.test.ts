/**
 * A balancer process paused (SIGSTOP: a stopped VM, a debugger) past the failure timeout while
 * its nodes stay healthy. Their heartbeats of the pause wait unread in its sockets, so the first
 * failure check after SIGCONT saw every member silent for the whole pause and failed one over (a
 * fault audit: 3 runs of 3, a healthy node taken out of its chains, its ranges under-replicated
 * until it caught up again). The writer now notices its own stall and starts detection over.
 * Real processes: a balancer and three memory nodes at replication factor 3.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Resources, ringOf, sleep, spawnBalancer, spawnNode, waitForRing } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

/** As the failover tests' (FAILOVER_TIMEOUTS): shorter ones fail members over on CI's loaded cores. */
const FAILURE_TIMEOUT_MS = 3000;
const IDS = ['node-1', 'node-2', 'node-3'];

/** The balancer's `dstore_balancer_members_failed_total`. */
async function membersFailed(adminPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const line = text.split('\n').find((each) => each.startsWith('dstore_balancer_members_failed_total '));
  return Number(line?.split(' ')[1] ?? Number.NaN);
}

describe('a paused balancer', () => {
  it('does not fail over healthy members when it resumes', async () => {
    const balancer = await spawnBalancer(resources, [
      '--replication-factor',
      '3',
      '--failure-timeout',
      String(FAILURE_TIMEOUT_MS),
      '--lease',
      '1500',
      '--heartbeat-timeout',
      '1000',
    ]);
    for (const id of IDS) await spawnNode(resources, id, balancer.ready.port);
    await waitForRing(balancer, IDS);
    expect(await membersFailed(balancer.ready.adminPort)).toBe(0);

    balancer.child.kill('SIGSTOP');
    await sleep(1.5 * FAILURE_TIMEOUT_MS);
    balancer.child.kill('SIGCONT');
    // A failure timeout after it resumed: the old behaviour failed a member over within 35 ms.
    await sleep(FAILURE_TIMEOUT_MS);
    expect(await membersFailed(balancer.ready.adminPort)).toBe(0);
    const ring = await ringOf(balancer);
    expect(ring.nodes.map((node) => [node.id, node.replicaState])).toEqual(IDS.map((id) => [id, 'up']));
  });
});
