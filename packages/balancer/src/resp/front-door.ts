import { unknownCommand, wrongArity } from './arguments.js';
import { admitAnonymous, authenticationRequired, NOAUTH } from './auth.js';
import type { RespCommand } from './command-table.js';
import type { RespCommandRunner, RespConnection } from './connection.js';
import { keySlotsOfArgs, type OrderedCommand } from './key-order.js';
import type { RespServices } from './services.js';
import { queueInTransaction } from './transaction.js';

/**
 * Runs each command of each RESP connection: looks it up, checks its arity and the connection's
 * authentication (and that a user's grant still exists after a users-file reload), then hands it
 * to the command. Unknown commands get Redis's exact error and the connection stays open.
 */
export class RespFrontDoor implements RespCommandRunner {
  constructor(private readonly services: RespServices) {}

  /** The command {@link orderOf} found for `args`, which {@link run} takes next: one lookup. */
  private foundFor: Uint8Array[] | undefined;
  private found: RespCommand | undefined;

  /**
   * A data command's keys and kind while a key's reads and writes go to different nodes (see
   * `KeyOrder`): a command flagged `write` writes, any other command naming keys reads; a data
   * command naming none (EXEC, FLUSHALL, SCAN) is a barrier. Undefined otherwise, and for the
   * commands MULTI queues (answered QUEUED; EXEC runs them).
   */
  orderOf(connection: RespConnection, args: Uint8Array[]): OrderedCommand | undefined {
    if (!this.services.readsLeaveTheHead() || connection.transaction.queueing) return undefined;
    const command = this.services.commands.find(args[0]!);
    this.foundFor = args;
    this.found = command;
    if (command === undefined) return undefined;
    const write = command.flags.includes('write');
    const slots = keySlotsOfArgs(args, command.keys);
    if (slots !== undefined) return { slots, write };
    return command.name === 'exec' || write || command.flags.includes('readonly')
      ? { slots: undefined, write, barrier: true }
      : undefined;
  }

  run(connection: RespConnection, args: Uint8Array[], seq: number): void {
    const services = this.services;
    const command = this.foundFor === args ? this.found : services.commands.find(args[0]!);
    this.foundFor = undefined;
    this.found = undefined;
    if (command === undefined) {
      // Between MULTI and EXEC a refused command discards the transaction (EXECABORT), as Redis.
      connection.transaction.spoil();
      connection.replyError(seq, unknownCommand(args));
      return;
    }
    if (command.arity > 0 ? args.length !== command.arity : args.length < -command.arity) {
      this.refuse(connection, seq, command.name, wrongArity(command.name));
      return;
    }
    if (
      command.name === 'exec' &&
      connection.identity === undefined &&
      authenticationRequired(this.services)
    ) {
      this.refuse(connection, seq, command.name, NOAUTH);
      return;
    }
    if (!command.beforeAuth && !this.authorized(connection, seq)) {
      connection.transaction.spoil();
      return;
    }
    if (connection.transaction.queueing && queueInTransaction(connection, command, args, seq, services))
      return;
    command.run(connection, args, seq, services);
  }

  /**
   * Refuses a command before it runs. Between MULTI and EXEC the transaction is then discarded
   * at EXEC; a refused EXEC itself ends it at once with EXECABORT, in or out of MULTI, as Redis
   * (`execCommandAbort`).
   */
  private refuse(connection: RespConnection, seq: number, name: string, error: string): void {
    if (name !== 'exec') {
      connection.transaction.spoil();
      connection.replyError(seq, error);
      return;
    }
    connection.transaction.reset();
    const reason = error.startsWith('ERR ') ? error.slice(4) : error;
    connection.replyError(seq, `EXECABORT Transaction discarded because of: ${reason}`);
  }

  /**
   * Whether the connection may run commands: authenticated, or admitted as anonymous now when no
   * users are configured. Answers the refusal itself.
   */
  private authorized(connection: RespConnection, seq: number): boolean {
    const identity = connection.identity;
    if (identity === undefined) {
      if (authenticationRequired(this.services)) {
        connection.replyError(seq, NOAUTH);
        return false;
      }
      return admitAnonymous(this.services, connection, seq);
    }
    if (identity.kind === 'user' && identity.grant.revoked) {
      // The users file was reloaded: the user's current grant applies, or none if it is gone.
      const grant = this.services.users?.get(identity.grant.name);
      if (grant === undefined) {
        connection.identity = undefined;
        connection.replyError(
          seq,
          `NOPERM user '${identity.grant.name}' no longer exists (users file reloaded)`,
        );
        void connection.close();
        return false;
      }
      identity.grant = grant;
    }
    return true;
  }
}
