/**
 * Versions handed out per millisecond of wall-clock time before the clock borrows from the
 * future (hybrid logical clock): 2^12, so that a version is `ms * 4096 + n`.
 */
export const VERSIONS_PER_MS = 4096;

/**
 * The wall-clock origin of versions: 2024-01-01T00:00:00Z. Counting from it rather than from
 * 1970 keeps `ms * 4096` below 2^53 (exact in a JS number) until the year 2093, where counting
 * from 1970 would run out in 2039. Versions of lmdb data written before versions existed (the
 * old per-key counter, below 2^32) are far below every version issued since 2024.
 */
export const VERSION_EPOCH_MS = Date.UTC(2024, 0, 1);

/**
 * The node-wide version clock C of a storage engine (see the protocol README, "Versions"): every
 * client write takes `v = max(C + 1, (Date.now() - VERSION_EPOCH_MS) * 4096)` and sets C = v, and
 * every version the node receives with a copy (MIGRATE_PUT, PULL) raises C to at least it. So
 * versions only grow on a node, across keys and across delete + re-create (C does not depend
 * on the key's entry), and a key's new owner writes versions above every version it received.
 *
 * One clock per engine; the lmdb engine persists a high-water mark ahead of it so that a restart
 * never issues a version again; a memory engine starts from the wall clock.
 */
export class VersionClock {
  private last: number;

  /** `start`: a value C is known to be at least (the lmdb engine's stored high-water mark). */
  constructor(start = 0) {
    this.last = start;
  }

  /** The newest version issued or received (C). */
  get current(): number {
    return this.last;
  }

  /** Issues the next version: above every version issued or received so far. */
  next(): number {
    const wall = (Date.now() - VERSION_EPOCH_MS) * VERSIONS_PER_MS;
    const version = wall > this.last ? wall : this.last + 1;
    this.last = version;
    return version;
  }

  /** Raises C to at least `version` (one received with a copy of a key). */
  observe(version: number): void {
    if (version > this.last) this.last = version;
  }
}

/** Throws a RangeError unless `version` is a version: an integer in 0..2^53-1. */
export function assertVersion(version: number): void {
  if (!Number.isSafeInteger(version) || version < 0) {
    throw new RangeError(`version must be an integer in 0..2^53-1, got ${version}`);
  }
}
