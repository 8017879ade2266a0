/**
 * Hash tags: the part of a key that decides its position, so that related keys share one. Redis
 * Cluster's rule (and twemproxy's `hash_tag`): with the tag `{}`, a key holding a `{` followed
 * later by a `}` with at least one character between them hashes only the characters between the
 * first `{` and the first `}` after it; any other key hashes whole.
 */

import { HashRingError } from './errors.js';

/**
 * Checks a hash tag option: two ASCII characters, the opening one then the closing one (they may
 * be the same, as twemproxy's `"$$"`). ASCII, so that each is one byte of a key's UTF-8 and the
 * rule reads the same on strings and on bytes.
 *
 * @throws HashRingError `INVALID_ARGUMENT`
 */
export function checkHashTag(tag: unknown): string {
  if (typeof tag !== 'string' || !/^[\x20-\x7e]{2}$/.test(tag)) {
    throw new HashRingError(
      'INVALID_ARGUMENT',
      `hashTag must be two printable ASCII characters, like "{}" (got ${JSON.stringify(tag)})`,
    );
  }
  return tag;
}

/**
 * The part of `key` that is hashed under `tag` (a checked two-character tag): the characters
 * between the first opening character and the first closing character after it when there is at
 * least one, else the whole key. A string key gives a string (its UTF-8 is the bytes the rule
 * picks, since the tag characters are ASCII), a byte key a view of its bytes.
 */
export function hashedPart<K extends string | Uint8Array>(key: K, tag: string): K {
  if (typeof key === 'string') {
    const start = key.indexOf(tag[0]!);
    if (start === -1) return key;
    const end = key.indexOf(tag[1]!, start + 1);
    return (end > start + 1 ? key.slice(start + 1, end) : key) as K;
  }
  const bytes = key as Uint8Array;
  const start = bytes.indexOf(tag.charCodeAt(0));
  if (start === -1) return key;
  const end = bytes.indexOf(tag.charCodeAt(1), start + 1);
  return (end > start + 1 ? bytes.subarray(start + 1, end) : key) as K;
}
