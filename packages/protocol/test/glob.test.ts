import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { globMatcher } from '../src/internal.js';

const bytes = (text: string): Uint8Array => Buffer.from(text, 'latin1');
const matches = (pattern: string, key: string): boolean => globMatcher(bytes(pattern))(bytes(key));

/** A reference matcher: the pattern turned into a RegExp (only for patterns made of safe pieces). */
function reference(pattern: string, key: string): boolean {
  let source = '';
  for (const c of pattern) source += c === '*' ? '[\\s\\S]*' : c === '?' ? '[\\s\\S]' : c;
  return new RegExp(`^${source}$`).test(key);
}

describe('globMatcher (Redis SCAN MATCH patterns)', () => {
  it('matches as Redis documents', () => {
    const cases: [string, string, boolean][] = [
      ['h?llo', 'hello', true],
      ['h?llo', 'hllo', false],
      ['h*llo', 'hllo', true],
      ['h*llo', 'heeeello', true],
      ['h[ae]llo', 'hallo', true],
      ['h[ae]llo', 'hillo', false],
      ['h[^e]llo', 'hallo', true],
      ['h[^e]llo', 'hello', false],
      ['h[a-b]llo', 'hbllo', true],
      ['h[b-a]llo', 'hallo', true],
      ['h[a-b]llo', 'hcllo', false],
      ['user:*', 'user:42', true],
      ['user:*', 'users:42', false],
      ['*', '', true],
      ['a\\*b', 'a*b', true],
      ['a\\*b', 'axb', false],
      ['[\\]]', ']', true],
      ['*:*:*', 'a:b:c', true],
      ['*:*:*', 'a:b', false],
      ['a[', 'a', false],
    ];
    for (const [pattern, key, expected] of cases)
      expect(matches(pattern, key), `${pattern} ~ ${key}`).toBe(expected);
  });

  it('agrees with a regular-expression reference on star and question-mark patterns (property)', () => {
    const piece = fc.constantFrom('a', 'b', ':', '*', '?');
    fc.assert(
      fc.property(
        fc.array(piece, { maxLength: 10 }),
        fc.array(fc.constantFrom('a', 'b', ':'), { maxLength: 14 }),
        (p, k) => {
          const pattern = p.join('');
          const key = k.join('');
          expect(matches(pattern, key)).toBe(reference(pattern, key));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('stays linear on a pattern that backtracks exponentially in a naive matcher', () => {
    const pattern = `${'*a'.repeat(40)}*b`;
    expect(matches(pattern, 'a'.repeat(2000))).toBe(false);
  });
});
