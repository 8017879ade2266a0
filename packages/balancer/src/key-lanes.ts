import { Op, type Request, type WithoutId } from '@dstore/protocol';

/**
 * The two connections the balancer keeps to each node: `MAIN` for every request, `BULK` for
 * large writes (so a client flooding big values does not queue everyone's small requests behind
 * its megabytes, see `ClusterNode.bulkLink`).
 */
export const MAIN = 0;
export const BULK = 1;
/** {@link MAIN} or {@link BULK}. */
export type Lane = typeof MAIN | typeof BULK;

/**
 * Where a request's keys fall in a {@link KeyLanes} table: one slot (most requests name one key),
 * several, or `undefined` for a request that names no key (control requests: no order to keep).
 */
export type KeySlots = number | readonly number[] | undefined;

/**
 * Slots of the table. A key's slot is a hash of its bytes; two keys sharing a slot only make a
 * request follow a lane it did not need (or wait), never reorder.
 */
const SLOTS = 4096;

/** FNV-1a of `key`, reduced to a slot. */
export function slotOf(key: Uint8Array): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < key.length; index++) hash = Math.imul(hash ^ key[index]!, 0x01000193);
  return (hash >>> 0) & (SLOTS - 1);
}

/** The slots of every key `message` names: its key or keys, MSET's entries, a transaction's steps and watches. */
export function keySlotsOf(message: WithoutId<Request>): KeySlots {
  switch (message.op) {
    case Op.MGET:
    case Op.EXISTS:
      return message.keys.map(slotOf);
    case Op.MSET:
      return message.entries.map((entry) => slotOf(entry.key));
    case Op.TRANSACT: {
      const slots = [slotOf(message.key)];
      for (const step of message.steps) slots.push(slotOf(step.key));
      for (const watch of message.watches ?? []) slots.push(slotOf(watch.key));
      return slots;
    }
    default:
      return 'key' in message && message.key instanceof Uint8Array ? slotOf(message.key) : undefined;
  }
}

/**
 * Keeps the order of each key's requests to one node across its two lanes. The node runs the
 * requests of one connection in arrival order, but nothing orders two connections: a STRLEN
 * pipelined after a large SET of its key (the SET on the bulk lane, the STRLEN on the main one)
 * could run first and read the old value, and a large SET after a small SET of its key could
 * land first and be overwritten by the older one. So a request whose keys have requests in flight
 * on one lane follows them on that lane; only a request whose keys have none is placed as it
 * prefers (by size). A request whose keys are in flight on both lanes (a multi-key request) must
 * wait until one of them drains ({@link laneFor} answers undefined). One table per node; counts
 * are kept per slot of {@link SLOTS}, never per request.
 */
export class KeyLanes {
  private readonly inFlight: readonly [Int32Array, Int32Array] = [
    new Int32Array(SLOTS),
    new Int32Array(SLOTS),
  ];

  /**
   * The lane a request naming `slots` must take so that it follows its keys' requests in flight:
   * `preferred` when they have none; undefined when they are in flight on both lanes.
   */
  laneFor(slots: KeySlots, preferred: Lane): Lane | undefined {
    if (slots === undefined) return preferred;
    const [main, bulk] = this.inFlight;
    if (typeof slots === 'number') return bulk[slots]! > 0 ? BULK : main[slots]! > 0 ? MAIN : preferred;
    let onMain = false;
    let onBulk = false;
    for (const slot of slots) {
      if (main[slot]! > 0) onMain = true;
      if (bulk[slot]! > 0) onBulk = true;
    }
    if (onMain && onBulk) return undefined;
    return onBulk ? BULK : onMain ? MAIN : preferred;
  }

  /** A request naming `slots` went out on `lane`. */
  sent(slots: KeySlots, lane: Lane): void {
    this.add(slots, lane, 1);
  }

  /** A request naming `slots` sent on `lane` is settled (answered, failed or timed out). */
  settled(slots: KeySlots, lane: Lane): void {
    this.add(slots, lane, -1);
  }

  private add(slots: KeySlots, lane: Lane, delta: number): void {
    if (slots === undefined) return;
    const counts = this.inFlight[lane];
    if (typeof slots === 'number') counts[slots]! += delta;
    else for (const slot of slots) counts[slot]! += delta;
  }
}
