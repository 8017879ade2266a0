import { isWord } from './arguments.js';
import type { RespConnection, RespReplyTarget } from './connection.js';
import type { RespServices } from './services.js';

/**
 * Runs one command: answers it exactly once, now or later, through `connection.beginReply(seq)` /
 * `endReply(seq)`. Positional arguments, so the hot commands allocate nothing per call.
 */
export type CommandHandler = (
  connection: RespConnection,
  args: Uint8Array[],
  seq: number,
  services: RespServices,
) => void;

/**
 * A data command's handler: it answers through a {@link RespReplyTarget} only, so a transaction
 * can run it for one element of EXEC's answer.
 */
export type DataCommandHandler = (
  connection: RespReplyTarget,
  args: Uint8Array[],
  seq: number,
  services: RespServices,
) => void;

/** A command's call as one object, for the handlers that are not on the hot path. */
export interface CommandCall {
  readonly connection: RespConnection;
  readonly services: RespServices;
  /** The command's arguments; `args[0]` is its name as sent. */
  readonly args: Uint8Array[];
  /** The command's sequence number: answer with `connection.beginReply(seq)` / `endReply(seq)`. */
  readonly seq: number;
}

/** One command of the RESP front door, described as Redis's COMMAND describes it. */
export interface RespCommand {
  /** Lower-case name. */
  readonly name: string;
  /** Redis's arity: N = exactly N arguments (name included), -N = at least N. */
  readonly arity: number;
  /** Redis's command flags, as COMMAND lists them (`readonly`, `write`, `fast`, ...). */
  readonly flags: readonly string[];
  /** Positions of the first and last key, and the step between keys (0 0 0: no keys). */
  readonly keys: readonly [first: number, last: number, step: number];
  /** True for the commands served before authentication (AUTH, HELLO, QUIT). */
  readonly beforeAuth?: boolean;
  /** Runs the command; answers exactly once, now or later. */
  readonly run: CommandHandler;
}

/** A data command (a key-value command the router serves), which a transaction may hold. */
export interface DataCommand extends RespCommand {
  readonly run: DataCommandHandler;
}

/** A bucket number for a command name from its length and first and last letters, any case. */
function bucketOf(length: number, first: number, last: number): number {
  return length * 65536 + (first | 0x20) * 256 + (last | 0x20);
}

/**
 * The commands by lower-case name. Adding a command is adding an entry: the front door checks
 * arity and authentication from its description, and COMMAND / COMMAND COUNT list it. Looking a
 * name up allocates nothing (no string is made of the bytes): the hot path of every command.
 */
export class CommandTable {
  private readonly byName = new Map<string, RespCommand>();
  private readonly buckets = new Map<number, RespCommand[]>();

  constructor(commands: readonly RespCommand[]) {
    for (const command of commands) this.add(command);
  }

  /** Adds (or replaces) a command. */
  add(command: RespCommand): void {
    const { name } = command;
    this.byName.set(name, command);
    const bucket = bucketOf(name.length, name.charCodeAt(0), name.charCodeAt(name.length - 1));
    const entries = (this.buckets.get(bucket) ?? []).filter((entry) => entry.name !== name);
    this.buckets.set(bucket, [...entries, command]);
  }

  /** The command named `name` (any case), or undefined. */
  get(name: string): RespCommand | undefined {
    return this.byName.get(name.toLowerCase());
  }

  /** The command whose name `bytes` spells (any ASCII case), or undefined. */
  find(bytes: Uint8Array): RespCommand | undefined {
    if (bytes.length === 0) return undefined;
    const entries = this.buckets.get(bucketOf(bytes.length, bytes[0]!, bytes[bytes.length - 1]!));
    if (entries === undefined) return undefined;
    for (const entry of entries) if (isWord(bytes, entry.name)) return entry;
    return undefined;
  }

  /** Every command, once each. */
  all(): RespCommand[] {
    return [...this.byName.values()];
  }
}

/** Index of the last key argument of a command with key positions `keys` called with `argCount` arguments. */
export function lastKeyIndex(keys: RespCommand['keys'], argCount: number): number {
  return keys[1] < 0 ? argCount + keys[1] : keys[1];
}

/** A {@link CommandHandler} written against a {@link CommandCall} (one object per call). */
export function withCall(handler: (call: CommandCall) => void): CommandHandler {
  return (connection, args, seq, services) => handler({ connection, args, seq, services });
}
