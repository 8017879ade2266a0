/**
 * What the front door tells clients about the server from the nodes.
 *
 * CONFIG GET `maxmemory` and `maxmemory-policy` report what the nodes run, not constants. Found by
 * hand: the front door always answered `noeviction` and `0`, so a client that checks the policy
 * before trusting Redis with data it must not lose (job queues do) was told nothing is evicted
 * while nodes ran `--eviction allkeys-lru`.
 *
 * INFO keyspace counts the keys (`db0:keys=N`, which GUIs show): found by hand empty while the
 * cluster held keys. The plain INFO every client sends on connect does not count them, and INFO
 * answers while a node is down.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Resources, waitFor } from './helpers.js';
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
    // Redis's glob, case-insensitive; a pattern that is no valid RegExp is no error (it matched
    // nothing but answered `ERR INTERNAL: Invalid regular expression`).
    expect(await redisCli(port, 'CONFIG', 'GET', 'MAXMEMORY-[P]OLIC?')).toBe(
      'maxmemory-policy\nallkeys-random',
    );
    expect(await redisCli(port, 'CONFIG', 'GET', '[')).toBe('');
    expect(await redisCli(port, 'CONFIG', 'GET', 'd[z-a]tabases', 'save(')).toBe('databases\n1');
  });
});

describe('RESP INFO keyspace', () => {
  it('counts the keys when asked, not on a plain INFO, and answers with a node down', async () => {
    const { balancer, respPort: port, nodes } = await startRespCluster(resources, 2);
    const info = async (...sections: string[]): Promise<string> =>
      (await redisCli(port, 'INFO', ...sections)).replaceAll('\r', '');
    // An empty database has no line, as in Redis.
    expect(await info('keyspace')).toBe('# Keyspace');
    const pairs = Array.from({ length: 30 }, (_, index) => [`info-key-${index}`, 'v']).flat();
    expect(await redisCli(port, 'MSET', ...pairs)).toBe('OK');
    expect(await info('keyspace')).toBe('# Keyspace\ndb0:keys=30');
    expect(await info('all')).toContain('# Keyspace\ndb0:keys=30');
    expect(await info('server', 'keyspace')).toMatch(/^# Server\n[\s\S]*\n# Keyspace\ndb0:keys=30$/);
    const plain = await info();
    expect(plain).toContain('loading:0');
    expect(plain).not.toContain('db0:');

    nodes[1]!.child.kill('SIGKILL');
    await waitFor(() => balancer.membership.node('resp-node-2')?.up === false, 'resp-node-2 down');
    // Not "no line", which would read as an empty database; and INFO itself still answers.
    expect(await info('keyspace')).toBe('# Keyspace\ndstore_keyspace_error:UNAVAILABLE');
    expect(await info()).toContain('loading:0');
  });
});
