/**
 * Captures Redis's own INCRBYFLOAT answers for `test/fixtures/incrbyfloat-redis.json`, the cases
 * `test/long-double.test.ts` checks dstore's arithmetic against: sends every case (SET or DEL of
 * the value, then INCRBYFLOAT) to a throwaway redis-server (`captureGolden`) and records each
 * answer.
 *
 *   pnpm --filter @dstore/storage-node golden:incrbyfloat [-- --cases 2500 --seed 7]
 *
 * Needs `redis-server` on the PATH (Debian: `apt-get install redis-server`). The cases come from a
 * seeded generator, so a rerun against the same Redis writes the same file.
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { captureGolden, type GoldenCase, seededRandom } from '@dstore/protocol/testing';

/** One row: the key's value (null: no key), the increment, Redis's answer (`-` first: an error). */
type IncrByFloatCase = [value: string | null, increment: string, answer: string];

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

const list = cases(Number(flags.cases)).map(
  ([value, increment]): GoldenCase => ({
    value,
    command: ['INCRBYFLOAT', 'k', increment],
    row: (answer): IncrByFloatCase => [value, increment, answer],
  }),
);
console.log(await captureGolden(fileURLToPath(output), list));
