/**
 * CONFIG GET `maxmemory` and `maxmemory-policy` report what the nodes run, not constants. Found by
 * hand: the front door always answered `noeviction` and `0`, so a client that checks the policy
 * before trusting Redis with data it must not lose (job queues do) was told nothing is evicted
 * while nodes ran `--eviction allkeys-lru`.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Resources } from './helpers.js';
import { redisCli, startRespCluster } from './resp-helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

describe('RESP CONFIG GET of the memory settings', () => {
  it('says noeviction and 0 for nodes without a cap', async () => {
    const { respPort: port } = await startRespCluster(resources, 2);
    expect(await redisCli(port, 'CONFIG', 'GET', 'maxmemory*')).toBe(
      'maxmemory\n0\nmaxmemory-policy\nnoeviction',
    );
  });

  it("gives the smallest node's cap and the policy of a node that evicts", async () => {
    const args = [['--max-memory', '64m'], ['--max-memory', '32m', '--eviction', 'allkeys-random'], []];
    const { respPort: port } = await startRespCluster(resources, 3, {}, (index) => args[index]!);
    expect(await redisCli(port, 'CONFIG', 'GET', 'maxmemory-policy')).toBe(
      'maxmemory-policy\nallkeys-random',
    );
    expect(await redisCli(port, 'CONFIG', 'GET', 'maxmemory')).toBe(`maxmemory\n${32 * 2 ** 20}`);
    // The other settings with them, in one answer.
    expect((await redisCli(port, 'CONFIG', 'GET', '*')).split('\n')).toEqual([
      'save',
      '',
      'appendonly',
      'no',
      'databases',
      '1',
      'maxmemory',
      String(32 * 2 ** 20),
      'maxmemory-policy',
      'allkeys-random',
    ]);
  });
});
