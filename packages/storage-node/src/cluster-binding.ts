/**
 * Which cluster a node's data belongs to: the generation of the cluster map (random, fixed when the
 * map is created, sent in every RING) whose rings this node serves on. A node binds to the
 * generation of the first RING it installs; while it holds any entry (a value or a tombstone) it
 * refuses a RING of another generation and names its own in every JOIN, so a balancer started on a
 * new map (another data dir, another etcd prefix, a map in memory) refuses it (CLUSTER_MISMATCH)
 * instead of rebuilding the cluster from whichever node joined first and losing the others' keys.
 * A node that holds nothing moves to a new generation freely.
 *
 * - lmdb: kept in {@link CLUSTER_BINDING_FILE_NAME} in the data dir, written durably before the
 *   first RING of a generation is installed (no entry of that cluster can exist before it).
 * - memory: kept in the process only: a restarted memory node holds nothing.
 *
 * @packageDocumentation
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DstoreError, ErrorCode } from '@dstore/protocol';
import { writeFileDurably } from '@dstore/protocol/internal';
import type { StorageEngine } from './engines/engine.js';

/** Name of the cluster binding file inside an lmdb node's data dir. */
export const CLUSTER_BINDING_FILE_NAME = 'cluster-generation';

/** The generation a node is bound to, and the RINGs it accepts (see the module). */
export class ClusterBinding {
  private bound: number | undefined;
  /** The binding changes still to run, in RING order; undefined when none is. */
  private queue: Promise<void> | undefined;

  private constructor(
    private readonly engine: StorageEngine,
    private readonly path: string | undefined,
    bound: number | undefined,
  ) {
    this.bound = bound;
  }

  /**
   * The binding of the node whose entries `engine` holds. lmdb (`dataDir` given): the one kept in
   * the data dir, none on a first start. memory (`dataDir` undefined): none. Throws DstoreError
   * INTERNAL when the file cannot be read or does not hold a generation (never guessed: a wrong
   * one would refuse the node's own cluster, none would let it join another).
   */
  static async load(engine: StorageEngine, dataDir: string | undefined): Promise<ClusterBinding> {
    if (dataDir === undefined) return new ClusterBinding(engine, undefined, undefined);
    const path = join(dataDir, CLUSTER_BINDING_FILE_NAME);
    let content: string;
    try {
      content = await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT')
        return new ClusterBinding(engine, path, undefined);
      throw bindingError(`cannot read the cluster binding file ${path}: ${(error as Error).message}`, error);
    }
    const text = content.endsWith('\n') ? content.slice(0, -1) : content;
    const generation = /^[0-9]{1,16}$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isSafeInteger(generation)) {
      throw bindingError(
        `the cluster binding file ${path} does not hold a cluster map generation (expected decimal digits, found ${JSON.stringify(content.slice(0, 40))}). Restore it from a backup of this data dir, or write the generation of the cluster this data belongs to (the balancer's /ring shows it)`,
      );
    }
    return new ClusterBinding(engine, path, generation);
  }

  /** The generation the node's data belongs to, named in JOIN: undefined while it holds nothing. */
  get dataGeneration(): number | undefined {
    return this.holdsData() ? this.bound : undefined;
  }

  /**
   * Lets a RING of `generation` be installed. Undefined when it may be installed at once: the node
   * is bound to it already, or it is a memory node (nothing to write: bound now, so that a
   * restarted member's first RING is installed before the requests sent right behind it on its
   * connection, which would otherwise be refused as arriving before any ring). Otherwise a
   * promise, settled in RING order, that binds the node to it (durably, lmdb) when it is unbound
   * or holds nothing then. Rejects with CLUSTER_MISMATCH when it is bound to another generation
   * and holds data.
   */
  accept(generation: number): Promise<void> | undefined {
    if (this.queue === undefined) {
      if (this.bound === generation) return undefined;
      if (this.path === undefined) {
        const refusal = this.mismatch(generation);
        if (refusal !== undefined) return Promise.reject(refusal);
        this.bound = generation;
        return undefined;
      }
    }
    const step = (this.queue ?? Promise.resolve()).then(() => this.bindTo(generation));
    const tail = step.catch(() => undefined);
    this.queue = tail;
    void tail.then(() => {
      if (this.queue === tail) this.queue = undefined;
    });
    return step;
  }

  /** Whether the engine holds any entry: a value or a tombstone (a delete that must not be undone). */
  private holdsData(): boolean {
    return this.engine.count() > 0 || this.engine.tombstoneCount() > 0;
  }

  /** CLUSTER_MISMATCH when a RING of `generation` must be refused: bound to another one and holding data. */
  private mismatch(generation: number): DstoreError | undefined {
    if (this.bound === undefined || this.bound === generation || !this.holdsData()) return undefined;
    return new DstoreError(
      ErrorCode.CLUSTER_MISMATCH,
      `RING of cluster map generation ${generation} refused: this node holds data of generation ${this.bound} (another cluster, or a map that was lost); start the balancer with the map this node belongs to, or the node on a fresh data dir`,
    );
  }

  private async bindTo(generation: number): Promise<void> {
    if (this.bound === generation) return;
    const refusal = this.mismatch(generation);
    if (refusal !== undefined) throw refusal;
    if (this.path !== undefined) {
      try {
        await writeFileDurably(this.path, `${generation}\n`);
      } catch (error) {
        throw bindingError(
          `cannot write the cluster binding file ${this.path}: ${(error as Error).message}`,
          error,
        );
      }
    }
    this.bound = generation;
  }
}

function bindingError(message: string, cause?: unknown): DstoreError {
  return new DstoreError(ErrorCode.INTERNAL, message, cause === undefined ? undefined : { cause });
}
