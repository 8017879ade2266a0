import type { RespConnection } from './connection.js';
import type { RespServices } from './services.js';

/** What a command handler gets: the connection, the front door's services, the command's turn. */
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
  readonly run: (call: CommandCall) => void;
}

/**
 * The commands by lower-case name. Adding a command is adding an entry: the front door checks
 * arity and authentication from its description, and COMMAND / COMMAND COUNT list it.
 */
export class CommandTable {
  private readonly byName = new Map<string, RespCommand>();

  constructor(commands: readonly RespCommand[]) {
    for (const command of commands) this.add(command);
  }

  /** Adds (or replaces) a command. */
  add(command: RespCommand): void {
    this.byName.set(command.name, command);
    // Clients send names upper-case almost always: a second entry spares the lower-casing.
    this.byName.set(command.name.toUpperCase(), command);
  }

  /** The command named `name` (any case), or undefined. */
  get(name: string): RespCommand | undefined {
    return this.byName.get(name) ?? this.byName.get(name.toLowerCase());
  }

  /** Every command, once each. */
  all(): RespCommand[] {
    return [...new Set(this.byName.values())];
  }
}
