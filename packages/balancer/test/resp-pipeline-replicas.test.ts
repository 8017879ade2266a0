/**
 * With replication (factor 3), a key's writes go to the head of its chain and its reads to the
 * tail: two nodes. A connection's pipeline must still run in order, as Redis runs it: a GET
 * pipelined after a SET of its key reads that SET, and a GET before a SET does not read it. Found
 * by a pressure audit: `SET k hello` then `GET k` in one write answered nil 50 times in 50.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Resources, sleep } from './helpers.js';
import { exchange as exchangeOnce, startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let port: number;

/** Sends `bytes` on a fresh connection; resolves everything answered until the server closes. */
const exchange = (bytes: string): Promise<string> => exchangeOnce(port, bytes);

const command = (...args: string[]): string =>
  `*${args.length}\r\n${args.map((arg) => `$${arg.length}\r\n${arg}\r\n`).join('')}`;

beforeAll(async () => {
  ({ respPort: port } = await startRespCluster(resources, 3, { replicationFactor: 3 }));
  // The chains settle as the nodes join (writes refused TRYAGAIN meanwhile).
  while ((await exchange(`${command('SET', 'ready', '1')}QUIT\r\n`)) !== '+OK\r\n+OK\r\n') await sleep(100);
}, 60_000);
afterAll(() => resources.releaseAll());

const bulk = (text: string): string => `$${text.length}\r\n${text}\r\n`;

describe('a pipeline at replication factor 3', () => {
  it("runs a key's reads and writes in the order sent", async () => {
    const big = 'w'.repeat(100_000);
    const wrong: string[] = [];
    for (let round = 0; round < 15; round++) {
      const answers = await Promise.all(
        [0, 1, 2].map(async (c) => {
          const key = `order:${round}:${c}`;
          const large = `order-big:${round}:${c}`;
          const sent = [
            command('SET', key, 'hello'),
            command('GET', key),
            command('SET', key, 'world'),
            command('MGET', key, 'elsewhere'),
            command('DEL', key),
            command('EXISTS', key),
            command('SET', large, big),
            command('STRLEN', large),
            'QUIT\r\n',
          ].join('');
          const expected = [
            '+OK\r\n',
            bulk('hello'),
            '+OK\r\n',
            `*2\r\n${bulk('world')}$-1\r\n`,
            ':1\r\n',
            ':0\r\n',
            '+OK\r\n',
            ':100000\r\n',
            '+OK\r\n',
          ].join('');
          const answer = await exchange(sent);
          return answer === expected ? undefined : answer.slice(0, 120);
        }),
      );
      for (const answer of answers) if (answer !== undefined) wrong.push(answer);
    }
    expect(wrong).toEqual([]);
  }, 120_000);
});
