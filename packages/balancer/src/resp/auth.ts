import { randomBytes } from 'node:crypto';
import { DEFAULT_USER, DstoreError, ErrorCode, isLoopbackAddress } from '@dstore/protocol';
import { decoyCredential } from '@dstore/protocol/internal';
import type { RespConnection } from './connection.js';
import { respErrorLine } from './errors.js';
import type { RespServices } from './services.js';

/** Redis's answer to a wrong user or password (the same for both, so names cannot be probed). */
export const WRONGPASS = 'WRONGPASS invalid username-password pair or user is disabled.';
/** Redis's answer to a command before AUTH when a password is required. */
export const NOAUTH = 'NOAUTH Authentication required.';
/** Redis's answer when no client slot is left. */
export const MAX_CLIENTS = 'ERR max number of clients reached';
const PROTECTED_MODE =
  'DENIED dstore is running in protected mode: no users are configured, so clients are accepted ' +
  'from loopback addresses only. Configure --users or --token.';

/**
 * Failed AUTHs after which a connection is closed (as the native port closes after one): a
 * guesser must reconnect, and the per-address budget (shared with the native port) bounds it.
 */
export const MAX_AUTH_FAILURES_PER_CONNECTION = 3;

/** Secret per process: decoy credentials of unknown users are stable but unguessable. */
const pepper = randomBytes(32);

/** Whether the front door requires AUTH (the balancer has users). */
export function authenticationRequired(services: RespServices): boolean {
  return services.users?.enabled === true;
}

/**
 * Admits a connection as anonymous when no users are configured (from loopback only in protected
 * mode). False, the refusal answered and the connection closing, when it may not be.
 */
export function admitAnonymous(services: RespServices, connection: RespConnection, seq: number): boolean {
  if (services.protectedMode && !isLoopbackAddress(connection.socket.remoteAddress)) {
    connection.replyError(seq, PROTECTED_MODE);
    void connection.close();
    return false;
  }
  if (!services.admit(connection)) {
    connection.replyError(seq, MAX_CLIENTS);
    void connection.close();
    return false;
  }
  connection.identity = { kind: 'anonymous' };
  return true;
}

/**
 * Verifies `user`/`password` against the users file's stored verifier (the same scrypt
 * derivation as the native handshake, compared in constant time; an unknown user costs the same
 * as a known one) through `services.passwordChecks` (one scrypt at a time, waiting
 * checks in turns by address, a right password remembered; `TRYAGAIN BUSY` when too many wait),
 * then calls `succeeded` in the command's turn, or answers WRONGPASS. Commands
 * pipelined behind it wait for the outcome, as they would on Redis. A failure is counted in the
 * per-address budget shared with the native port: from an address it has locked out, AUTH is
 * refused at once (`NOAUTH UNAUTHORIZED: too many failed authentications ...`, connection closed)
 * without any scrypt; and a connection is closed after {@link MAX_AUTH_FAILURES_PER_CONNECTION}
 * failures.
 */
export function authenticate(
  services: RespServices,
  connection: RespConnection,
  seq: number,
  user: string,
  password: string,
  succeeded: () => void,
): void {
  const address = connection.socket.remoteAddress;
  const locked = services.authFailures.refusal(address);
  if (locked !== undefined) {
    connection.replyError(seq, respErrorLine(ErrorCode.UNAUTHORIZED, locked));
    void connection.close();
    return;
  }
  const grant = services.users?.get(user);
  const credential = grant?.credential ?? decoyCredential(user || DEFAULT_USER, pepper);
  connection.hold();
  services.passwordChecks.verify(credential, password, address).then(
    (verified) => {
      if (!verified || grant === undefined) {
        services.authFailures.failed(address);
        connection.authFailures++;
        connection.replyError(seq, WRONGPASS);
        if (connection.authFailures >= MAX_AUTH_FAILURES_PER_CONNECTION) void connection.close();
      } else if (!services.admit(connection)) {
        connection.replyError(seq, MAX_CLIENTS);
        void connection.close();
      } else {
        connection.identity = { kind: 'user', grant };
        succeeded();
      }
      connection.release();
    },
    (error: unknown) => {
      // BUSY: too many checks waiting. Not this client's failure: nothing was checked.
      const busy = error instanceof DstoreError ? error : new DstoreError(ErrorCode.INTERNAL, String(error));
      connection.replyError(seq, respErrorLine(busy.code, busy.message));
      connection.release();
    },
  );
}
