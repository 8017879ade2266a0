/**
 * Captures Redis's own INCRBYFLOAT answers for `test/fixtures/incrbyfloat-redis.json`, the cases
 * `test/long-double.test.ts` checks dstore's arithmetic against. Starts a throwaway redis-server
 * (on a unix socket in a temporary directory, nothing on TCP), sends every case (SET or DEL of
 * the value, then INCRBYFLOAT), records each answer, stops the server.
 *
 *   pnpm --filter @dstore/storage-node golden:incrbyfloat [-- --cases 2500 --seed 7]
 *
 * Needs `redis-server` on the PATH (Debian: `apt-get install redis-server`). The cases come from a
 * seeded generator, so a rerun against the same Redis writes the same file.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { seededRandom } from '@dstore/protocol/testing';

/** One case: the key's value (null: no key), the increment, Redis's answer (`-` first: an error). */
type GoldenCase = [value: string | null, increment: string, answer: string];

const { values: flags } = parseArgs({
  options: { cases: { type: 'string', default: '2500' }, seed: { type: 'string', default: '7' } },
});
const output = new URL('../test/fixtures/incrbyfloat-redis.json', import.meta.url);

const next = seededRandom(Number(flags.seed));
const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
const int = (low: number, high: number): number => low + Math.floor(next() * (high - low + 1));
const digits = (count: number, alphabet = '0123456789'): string =>
  Array.from({ length: count }, () => pick([...alphabet])).join('');
const sign = (): string => pick(['', '', '', '-', '+']);

/** Texts Redis refuses or reads in a surprising way. */
const EDGES = [
  '',
  ' 1',
  '1 ',
  '\t1',
  '1\n',
  '.',
  '-',
  '+',
  'e5',
  '1e',
  '1e+',
  '1.5e-',
  '0x',
  '0x.',
  '0xp1',
  '0x1p',
  '+-1',
  '--1',
  '1..2',
  '1.2.3',
  '1_000',
  'inf',
  '-inf',
  'INF',
  'Infinity',
  '-infinity',
  'infin',
  'nan',
  'NaN',
  '-nan',
  'nan(1)',
  '0',
  '-0',
  '+0',
  '00',
  '.0',
  '0.',
  '-.0',
  '5.',
  '.5',
  '1E5',
  '1e-5',
  '1e+0005',
  '0e999999999',
  '1e999999999',
  '1e-999999999',
  '0x10',
  '0X1P+2',
  '0x.8',
  '0x1.8p1',
  '0xAbC.dEfp-3',
  '0x1p-16445',
  '0x1p-16446',
  '0x1p-16447',
  '0x1p16383',
  '0x1p16384',
  '1.18973149535723176502e4932',
  '1.2e4932',
  '1e-4950',
  '1e-4951',
  '3.6e-4951',
  '1.9e-4951',
  '1.8e-4951',
  '1e-5000',
  '9223372036854775807',
  '-9223372036854775808',
  '18446744073709551615',
  '18446744073709551616',
  '36893488147419103231',
  '0.1',
  '0.2',
  '0.3',
  '1e300',
  '-1e300',
  '1e308',
  '1.7976931348623157e308',
  '2.5e-324',
  '1\u0000',
];

/** A number in one of the shapes INCRBYFLOAT users and attackers send. */
function numberText(): string {
  switch (int(0, 11)) {
    case 0:
      return String(int(-1000, 1000));
    case 1:
      return sign() + digits(int(1, 25));
    case 2: {
      const whole = digits(int(0, 12));
      const fraction = digits(int(0, 20));
      return `${sign()}${whole}.${fraction}`.replace(/^([+-]?)\.$/, '$10.5');
    }
    case 3: {
      const mantissa = `${digits(int(1, 3))}.${digits(int(0, 18))}`;
      return `${sign()}${mantissa}${pick(['e', 'E'])}${pick(['', '+', '-'])}${int(0, 40)}`;
    }
    case 4:
      return `${sign()}${digits(1)}.${digits(int(0, 20))}e-${int(4900, 4960)}`;
    case 5:
      return `${sign()}${digits(1)}.${digits(int(0, 5))}e${int(280, 320)}`;
    case 6:
      return String((next() - 0.5) * 10 ** int(-12, 12));
    case 7: {
      const hex = `${digits(int(0, 8), '0123456789abcdefABCDEF')}.${digits(int(0, 8), '0123456789abcdef')}`;
      return `${sign()}${pick(['0x', '0X'])}${hex === '.' ? '1' : hex}${pick(['', `p${int(-80, 80)}`, `P-${int(16430, 16460)}`])}`;
    }
    case 8:
      // Odd multiples of 2^-k: decimal expansions longer than 17 places, ties at the 17th.
      return `${sign()}0x${(int(0, 2 ** 20) * 2 + 1).toString(16)}p-${int(18, 80)}`;
    case 9:
      return `0.${'0'.repeat(int(0, 20))}${digits(int(1, 4))}`;
    case 10:
      return `${digits(int(1, 5))}${'0'.repeat(int(10, 25))}.${digits(int(0, 3))}`;
    default:
      return pick(EDGES);
  }
}

function cases(count: number): [string | null, string][] {
  const list: [string | null, string][] = [];
  for (const edge of EDGES) list.push([null, edge], ['1.5', edge], [edge, '1']);
  // Sums near the largest finite value, which overflow or not.
  list.push(
    ['1.18973149535723176502e4932', '1e4900'],
    ['1.18973149535723176502e4932', '1.18973149535723176502e4932'],
  );
  list.push(['1.18973149535723176502e4932', '-1.18973149535723176502e4932'], ['-0', '-0'], ['0.1', '0.2']);
  while (list.length < count) list.push([next() < 0.15 ? null : numberText(), numberText()]);
  return list;
}

/** One RESP command, as an array of bulk strings. */
function command(...args: string[]): Buffer {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.from(arg, 'latin1');
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** Reads `count` simple RESP2 answers (+, -, :, $) off `input`; their texts, `-` kept on errors. */
function answers(input: Buffer, count: number): string[] | undefined {
  const out: string[] = [];
  let at = 0;
  while (out.length < count) {
    const end = input.indexOf('\r\n', at);
    if (end < 0) return undefined;
    const line = input.subarray(at, end).toString('latin1');
    if (line[0] !== '$') {
      out.push(line[0] === '-' ? line : line.slice(1));
      at = end + 2;
      continue;
    }
    const length = Number(line.slice(1));
    if (input.length < end + 2 + length + 2) return undefined;
    out.push(input.subarray(end + 2, end + 2 + length).toString('latin1'));
    at = end + 2 + length + 2;
  }
  return out;
}

async function main(): Promise<void> {
  const directory = mkdtempSync(join(tmpdir(), 'dstore-golden-'));
  const socket = join(directory, 'redis.sock');
  const server = spawn(
    'redis-server',
    ['--port', '0', '--unixsocket', socket, '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  );
  try {
    const list = cases(Number(flags.cases));
    let connection = createConnection(socket);
    for (let attempt = 0; ; attempt++) {
      const ready = await new Promise<boolean>((resolve) => {
        connection.once('connect', () => resolve(true));
        connection.once('error', () => resolve(false));
      });
      if (ready) break;
      if (attempt > 50) throw new Error('redis-server did not start');
      await sleep(100);
      connection = createConnection(socket);
    }
    const version = await roundTrip(connection, [command('INFO', 'server')]);
    const redisVersion = /redis_version:(\S+)/.exec(version[0] ?? '')?.[1] ?? 'unknown';
    const requests = list.flatMap(([value, increment]) => [
      value === null ? command('DEL', 'k') : command('SET', 'k', value),
      command('INCRBYFLOAT', 'k', increment),
    ]);
    const replies = await roundTrip(connection, requests);
    const golden: GoldenCase[] = list.map(([value, increment], index) => [
      value,
      increment,
      replies[index * 2 + 1]!,
    ]);
    connection.end();
    const path = fileURLToPath(output);
    writeFileSync(path, JSON.stringify({ redis: redisVersion, cases: golden }));
    // In the repository's JSON style, so a rerun against the same Redis changes nothing.
    execFileSync('pnpm', ['exec', 'biome', 'format', '--write', path], { stdio: 'ignore' });
    console.log(`${golden.length} cases from Redis ${redisVersion} -> ${path}`);
  } finally {
    server.kill('SIGKILL');
    rmSync(directory, { recursive: true, force: true });
  }
}

function roundTrip(connection: ReturnType<typeof createConnection>, requests: Buffer[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk]);
      const parsed = answers(received, requests.length);
      if (parsed === undefined) return;
      connection.off('data', onData);
      resolve(parsed);
    };
    connection.on('data', onData);
    connection.once('error', reject);
    connection.write(Buffer.concat(requests));
  });
}

await main();
