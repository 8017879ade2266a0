/**
 * The balancer's RESP front door (`--resp-port`): Redis clients and tools on the same router,
 * limits, deadlines and users as the native port. See the package README, section "RESP".
 */
import type { HashRing } from '@dstore/hashring';
import { type AuthFailureBudget, DEFAULT_LIMITS, type UserDirectory } from '@dstore/protocol';
import type { ClientOutputBudget, PasswordChecks } from '@dstore/protocol/internal';
import type { ResolvedBalancerOptions } from '../config.js';
import type { Router } from '../router.js';
import { CommandTable } from './command-table.js';
import { CONNECTION_COMMANDS } from './connection-commands.js';
import { DATA_COMMANDS } from './data-commands.js';
import { RespServer } from './server.js';
import type { RespServices, ServerFacts } from './services.js';
import { TAG_COMMANDS } from './tag-commands.js';
import { TRANSACTION_COMMANDS } from './transaction.js';

export { RespServer } from './server.js';

/** Most commands of one connection read and not answered yet (as the native port's maxServing). */
const MAX_IN_FLIGHT = 1024;

/** What the balancer hands its RESP front door. */
export interface RespFrontDoorParts {
  readonly options: ResolvedBalancerOptions;
  readonly router: Router;
  readonly users: UserDirectory | undefined;
  /** Failed client authentications per address, shared with the native port. */
  readonly authFailures: AuthFailureBudget;
  /** Checks of the passwords AUTH sends (scrypt work bounded, in turns by address). */
  readonly passwordChecks: PasswordChecks;
  /** The process's bound on bytes waiting for clients, shared with the native port. */
  readonly outputBudget: ClientOutputBudget;
  /** Facts for INFO; `port` and `connectedClients` are filled in by the server. */
  readonly facts: () => Omit<ServerFacts, 'port' | 'connectedClients'>;
  /** DBSIZE and SCAN pages of the cluster. */
  readonly dbSize: RespServices['dbSize'];
  /** WAIT's answer. */
  readonly replicasOfEveryWrite: RespServices['replicasOfEveryWrite'];
  /** The nodes' memory cap and eviction policy. */
  readonly memoryConfig: RespServices['memoryConfig'];
  readonly scan: RespServices['scan'];
  /** FLUSHALL of the cluster. */
  readonly flush: RespServices['flush'];
  /**
   * The ring keys are routed on (the membership's routing ring), for the transactions' check that
   * their keys share one position.
   */
  readonly ring: () => HashRing;
  /** See {@link RespServices.readsLeaveTheHead}. */
  readonly readsLeaveTheHead: () => boolean;
}

/** The RESP server of a balancer, with the balancer's connection caps, deadlines, TLS and users. */
export function createRespServer(parts: RespFrontDoorParts): RespServer {
  const { options } = parts;
  const limits = DEFAULT_LIMITS;
  const server: RespServer = new RespServer(
    {
      host: options.respHost,
      port: options.respPort,
      maxConnections: options.maxConnections,
      // Peers never connect here: their slots stay unused.
      maxPeerConnections: 1,
      maxPendingConnections: options.maxPendingConnections,
      maxPendingPerAddress: options.maxPendingPerAddress,
      // Without users a RESP client has nothing to prove: it takes a client slot when accepted, so
      // redis-benchmark's hundreds of connections opened at once are not evicted as silent
      // pending ones. With users, connections stay pending (capped, evicted, deadline) until AUTH.
      requireAuthentication: parts.users?.enabled === true,
      authTimeoutMs: options.authTimeoutMs,
      clientIdleTimeoutMs: options.clientIdleTimeoutMs,
      tls: options.tls,
      outputBudget: parts.outputBudget,
      connection: {
        parser: {
          maxArgBytes: Math.max(limits.maxValueBytes, limits.maxKeyBytes),
          maxCommandBytes: limits.maxFrameBytes,
          // DEL, EXISTS and MGET run any number of keys maxBatchKeys at a time (a cleanup's
          // `xargs redis-cli del` sends thousands), MSET a key and a value per entry up to
          // maxBatchKeys; the cap bounds what one command's argument views cost (~1.6 MB).
          maxArgs: 16 * limits.maxBatchKeys + 1,
        },
        maxInFlight: MAX_IN_FLIGHT,
        // The native port's bound (`--max-client-bytes-in-flight`), enforced the same way.
        maxServingBytes: options.maxClientBytesInFlight,
        // The native port's deadline for a started frame, for a started command.
        frameTimeoutMs: options.frameTimeoutMs,
        maxOutputBytes: options.respMaxOutputBytes,
        authRequired: () => parts.users?.enabled === true,
      },
    },
    {
      router: parts.router,
      ring: parts.ring,
      readsLeaveTheHead: parts.readsLeaveTheHead,
      limits,
      maxAnswerBytes: options.respMaxOutputBytes,
      users: parts.users,
      authFailures: parts.authFailures,
      passwordChecks: parts.passwordChecks,
      protectedMode: options.protectedMode,
      commands: new CommandTable([
        ...CONNECTION_COMMANDS,
        ...DATA_COMMANDS,
        ...TAG_COMMANDS,
        ...TRANSACTION_COMMANDS,
      ]),
      dbSize: parts.dbSize,
      replicasOfEveryWrite: parts.replicasOfEveryWrite,
      memoryConfig: parts.memoryConfig,
      scan: parts.scan,
      flush: parts.flush,
      facts: () => ({
        ...parts.facts(),
        port: server.address.port,
        connectedClients: server.connectionCount,
      }),
    },
  );
  return server;
}
