/**
 * A connection's pipeline keeps its order per key across the balancer's two links to a node (the
 * main link and the bulk link of large writes): Redis runs a connection's commands in order, so a
 * STRLEN pipelined after a large SET of its key reads that SET, and a small SET pipelined before a
 * large one is overwritten by it. Found as a rare failure of `resp-auth.test.ts` in CI (a STRLEN
 * after a 100 KB SET answered 0): the SET went on the bulk link, the STRLEN on the main one, and
 * nothing ordered the two connections.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Resources } from './helpers.js';
import { exchange as exchangeOnce, startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let port: number;

beforeAll(async () => {
  ({ respPort: port } = await startRespCluster(resources, 2));
}, 60_000);
afterAll(() => resources.releaseAll());

/** Sends `bytes` on a fresh connection; resolves everything answered until the server closes. */
const exchange = (bytes: string): Promise<string> => exchangeOnce(port, bytes);

const command = (...args: string[]): string =>
  `*${args.length}\r\n${args.map((arg) => `$${arg.length}\r\n${arg}\r\n`).join('')}`;

const big = 'w'.repeat(100_000);

describe('pipelined commands around a large write', () => {
  it('a STRLEN pipelined after a large SET of its key reads it', async () => {
    const wrong: string[] = [];
    for (let round = 0; round < 20; round++) {
      const answers = await Promise.all(
        [0, 1, 2].map((c) => {
          const key = `after:${round}:${c}`;
          return exchange(`${command('SET', key, big)}${command('STRLEN', key)}QUIT\r\n`);
        }),
      );
      for (const answer of answers) if (answer !== '+OK\r\n:100000\r\n+OK\r\n') wrong.push(answer);
    }
    expect(wrong).toEqual([]);
  }, 120_000);

  it('an MGET pipelined after a large SET and a small SET of its keys (one on each link) reads both', async () => {
    const wrong: string[] = [];
    for (let round = 0; round < 15; round++) {
      const answers = await Promise.all(
        [0, 1, 2].map((c) => {
          // One hash tag: both keys on one node, the MGET one request to it.
          const [large, small] = [`{mget:${round}:${c}}:large`, `{mget:${round}:${c}}:small`];
          return exchange(
            `${command('SET', large, big)}${command('SET', small, 'small')}${command('MGET', large, small)}QUIT\r\n`,
          );
        }),
      );
      const expected = `+OK\r\n+OK\r\n*2\r\n$${big.length}\r\n${big}\r\n$5\r\nsmall\r\n+OK\r\n`;
      for (const answer of answers) if (answer !== expected) wrong.push(answer.slice(0, 60));
    }
    expect(wrong).toEqual([]);
  }, 120_000);

  it('a large SET pipelined after a GET and a small SET of its key runs after them', async () => {
    // Small commands of other connections keep the main links busy meanwhile.
    let noisy = true;
    const noise = (async () => {
      while (noisy) await exchange(`${command('SET', 'noise', 'x').repeat(500)}QUIT\r\n`);
    })();
    const wrong: string[] = [];
    try {
      for (let round = 0; round < 15; round++) {
        const keys = [0, 1, 2].map((c) => `before:${round}:${c}`);
        const answers = await Promise.all(
          keys.map((key) =>
            exchange(
              `${command('GET', key)}${command('SET', key, 'small')}${command('SET', key, big)}${command('STRLEN', key)}QUIT\r\n`,
            ),
          ),
        );
        for (const answer of answers) {
          if (answer !== '$-1\r\n+OK\r\n+OK\r\n:100000\r\n+OK\r\n') wrong.push(answer.slice(0, 60));
        }
        // What stays stored is the large value, as after Redis ran the three in order.
        const after = await Promise.all(keys.map((key) => exchange(`${command('STRLEN', key)}QUIT\r\n`)));
        for (const answer of after) if (answer !== ':100000\r\n+OK\r\n') wrong.push(`stored: ${answer}`);
      }
    } finally {
      noisy = false;
      await noise;
    }
    expect(wrong).toEqual([]);
  }, 120_000);
});
