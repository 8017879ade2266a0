import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openEngine, type StorageEngine } from '../../src/engines/index.js';

/** One engine kind for the shared engine suites: opens fresh engines, removes what they left. */
export interface Harness {
  readonly name: 'memory' | 'lmdb';
  /** Opens a fresh engine (or reopens the same lmdb directory when `reopen` is set). */
  open(reopen?: boolean): Promise<StorageEngine>;
  cleanup(): Promise<void>;
}

/** The memory engine (nothing to clean up). */
export function memoryHarness(): Harness {
  return { name: 'memory', open: () => openEngine({ engine: 'memory' }), cleanup: async () => {} };
}

/** The lmdb engine in a temporary directory, removed by `cleanup`. */
export function lmdbHarness(): Harness {
  let dir: string | undefined;
  return {
    name: 'lmdb',
    async open(reopen = false) {
      if (!reopen || dir === undefined) dir = await mkdtemp(join(tmpdir(), 'dstore-engine-'));
      return openEngine({ engine: 'lmdb', dataDir: dir });
    },
    async cleanup() {
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    },
  };
}
