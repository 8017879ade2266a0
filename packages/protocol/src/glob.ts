/**
 * Redis's glob patterns (SCAN MATCH, KEYS), on bytes: `*` any run of bytes, `?` one byte,
 * `[abc]` / `[a-z]` / `[^...]` a class, `\x` the byte x. Case-sensitive, as Redis.
 *
 * The pattern is compiled once per SCAN call into tokens, and matched with the classic two-pointer
 * walk that remembers only the last `*` (a later star never needs an earlier one revisited), so a
 * hostile pattern such as `*a*a*a*a*b` costs O(pattern x key) per key, never exponential time.
 */

const STAR = -1;
const ANY = -2;

/** A literal byte (0..255), {@link STAR}, {@link ANY}, or a class (256 flags). */
type Token = number | Uint8Array;

function compile(pattern: Uint8Array): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < pattern.length) {
    const byte = pattern[i]!;
    if (byte === 0x2a /* * */) {
      // Consecutive stars are one star.
      if (tokens[tokens.length - 1] !== STAR) tokens.push(STAR);
      i++;
    } else if (byte === 0x3f /* ? */) {
      tokens.push(ANY);
      i++;
    } else if (byte === 0x5b /* [ */) {
      i = compileClass(pattern, i + 1, tokens);
    } else if (byte === 0x5c /* \ */ && i + 1 < pattern.length) {
      tokens.push(pattern[i + 1]!);
      i += 2;
    } else {
      tokens.push(byte);
      i++;
    }
  }
  return tokens;
}

/** Compiles the class starting after its `[`; returns the index after its `]` (or the pattern's end, as Redis). */
function compileClass(pattern: Uint8Array, from: number, tokens: Token[]): number {
  const members = new Uint8Array(256);
  let i = from;
  const negated = pattern[i] === 0x5e; /* ^ */
  if (negated) i++;
  while (i < pattern.length && pattern[i] !== 0x5d /* ] */) {
    let low = pattern[i]!;
    if (low === 0x5c /* \ */ && i + 1 < pattern.length) low = pattern[++i]!;
    if (pattern[i + 1] === 0x2d /* - */ && i + 2 < pattern.length && pattern[i + 2] !== 0x5d) {
      let high = pattern[i + 2]!;
      if (high === 0x5c && i + 3 < pattern.length) {
        high = pattern[i + 3]!;
        i++;
      }
      const [a, b] = low <= high ? [low, high] : [high, low];
      for (let c = a; c <= b; c++) members[c] = 1;
      i += 3;
    } else {
      members[low] = 1;
      i++;
    }
  }
  if (negated) for (let c = 0; c < 256; c++) members[c] = members[c] === 1 ? 0 : 1;
  tokens.push(members);
  return i + 1;
}

function matchesOne(token: Token, byte: number): boolean {
  if (token === ANY) return true;
  if (typeof token === 'number') return token === byte;
  return token[byte] === 1;
}

/**
 * A matcher for `pattern` (compiled once): whether a key matches it entirely.
 */
export function globMatcher(pattern: Uint8Array): (key: Uint8Array) => boolean {
  const tokens = compile(pattern);
  return (key) => {
    let t = 0;
    let k = 0;
    let starToken = -1;
    let starKey = 0;
    while (k < key.length) {
      const token = tokens[t];
      if (token === STAR) {
        starToken = t++;
        starKey = k;
      } else if (token !== undefined && matchesOne(token, key[k]!)) {
        t++;
        k++;
      } else if (starToken >= 0) {
        // Let the last star swallow one more byte and retry what follows it.
        t = starToken + 1;
        k = ++starKey;
      } else {
        return false;
      }
    }
    while (tokens[t] === STAR) t++;
    return t === tokens.length;
  };
}
