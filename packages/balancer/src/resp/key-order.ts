import { type KeySlots, slotOf } from '../key-lanes.js';

/**
 * One command's place in a {@link KeyOrder}: the slots of the keys it names and whether it writes
 * them. Built only while a key's reads and writes go to different nodes.
 */
export interface OrderedCommand {
  readonly slots: KeySlots;
  readonly write: boolean;
  /**
   * A command on data without keys named (EXEC, whose queued commands are not counted; FLUSHALL,
   * SCAN, DBSIZE): it waits for every command in flight, and every command waits for it.
   */
  readonly barrier?: boolean;
}

/**
 * The slots of the keys of `args` by a command's key positions (Redis's first, last and step;
 * a negative last counts from the end), or undefined when it names none.
 */
export function keySlotsOfArgs(
  args: readonly Uint8Array[],
  keys: readonly [number, number, number],
): KeySlots {
  const [first, last, step] = keys;
  if (first <= 0 || step <= 0 || first >= args.length) return undefined;
  const end = last < 0 ? args.length + last : Math.min(last, args.length - 1);
  if (end === first) return slotOf(args[first]!);
  const slots: number[] = [];
  for (let index = first; index <= end; index += step) slots.push(slotOf(args[index]!));
  return slots;
}

/**
 * Keeps a RESP connection's commands of one key in the order it sent them when a key's reads and
 * writes are served by different nodes (a replication factor above 1: writes at the head of the
 * key's chain, reads at its tail). Pipelined, `SET k v` then `GET k` went to two nodes at once,
 * and the GET, served by the tail before the SET reached it, read the old value; a GET before a
 * SET could read the new one. Redis runs a connection's commands in order, and its clients
 * (pipelines, MULTI-less batches) rely on it. So a command waits while commands of the other kind
 * (read or write) naming one of its keys are in flight on the connection; commands of one kind go
 * to one node per key, where the node link keeps their order. Counts are kept per slot (two keys
 * sharing a slot only make a command wait, never reorder), only for commands in flight.
 */
export class KeyOrder {
  /** Per slot with commands in flight: their number, positive for reads, negative for writes. */
  private readonly inFlight = new Map<number, number>();
  /** The commands in flight that count here, by sequence number. */
  private readonly started = new Map<number, OrderedCommand>();
  /** Barriers in flight (see {@link OrderedCommand.barrier}). */
  private barriers = 0;

  /** Whether `command` must wait: a command of the other kind naming one of its keys is in flight. */
  mustWait(command: OrderedCommand): boolean {
    if (this.barriers > 0) return true;
    if (command.barrier === true) return this.started.size > 0;
    const { slots, write } = command;
    if (this.inFlight.size === 0 || slots === undefined) return false;
    if (typeof slots === 'number') return this.otherKindAt(slots, write);
    for (const slot of slots) if (this.otherKindAt(slot, write)) return true;
    return false;
  }

  /** `command`, number `seq`, is sent: it counts until {@link answered}. */
  start(seq: number, command: OrderedCommand): void {
    const { slots, write } = command;
    if (command.barrier === true) {
      this.barriers++;
      this.started.set(seq, command);
      return;
    }
    if (slots === undefined) return;
    this.started.set(seq, command);
    if (typeof slots === 'number') this.add(slots, write ? -1 : 1);
    else for (const slot of slots) this.add(slot, write ? -1 : 1);
  }

  /** Command `seq` is answered; true when it counted here (commands waiting may go now). */
  answered(seq: number): boolean {
    if (this.started.size === 0) return false;
    const command = this.started.get(seq);
    if (command === undefined) return false;
    this.started.delete(seq);
    if (command.barrier === true) {
      this.barriers--;
      return true;
    }
    const { slots, write } = command;
    if (typeof slots === 'number') this.add(slots, write ? 1 : -1);
    else if (slots !== undefined) for (const slot of slots) this.add(slot, write ? 1 : -1);
    return true;
  }

  private otherKindAt(slot: number, write: boolean): boolean {
    const count = this.inFlight.get(slot);
    return count !== undefined && (write ? count > 0 : count < 0);
  }

  private add(slot: number, delta: number): void {
    const count = (this.inFlight.get(slot) ?? 0) + delta;
    if (count === 0) this.inFlight.delete(slot);
    else this.inFlight.set(slot, count);
  }
}
