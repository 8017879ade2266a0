import type { HashRing } from '@dstore/hashring';
import type {
  AuthFailureBudget,
  KeysResponse,
  ProtocolLimits,
  ScanRequest,
  UserDirectory,
  UserGrant,
  WithoutId,
} from '@dstore/protocol';
import type { PasswordChecks } from '@dstore/protocol/internal';
import type { Router } from '../router.js';
import type { MemoryConfig } from '../stats.js';
import type { CommandTable } from './command-table.js';
import type { RespConnection } from './connection.js';

/** What INFO and HELLO report about this balancer. */
export interface ServerFacts {
  readonly balancerId: string;
  /** The dstore version. */
  readonly version: string;
  /** The RESP port. */
  readonly port: number;
  readonly connectedClients: number;
  readonly uptimeSeconds: number;
  /** Storage nodes in the ring, and its epoch. */
  readonly nodes: number;
  readonly epoch: number;
}

/**
 * The router's forwarding the data commands use: the balancer's {@link Router}, or while a
 * transaction's commands are read (EXEC) the recorder that turns them into its steps.
 */
export type RespRouting = Pick<
  Router,
  'forwardToOwner' | 'forwardKeyed' | 'forwardExists' | 'forwardMGet' | 'forwardMSet'
>;

/** What the RESP front door offers its commands. */
export interface RespServices {
  /** The balancer's router: the same forwarding, deadlines and fail-fast as the native port. */
  readonly router: RespRouting;
  /**
   * The ring keys are routed on. A transaction uses only its `position` and `hashTag`, which are
   * fixed for a cluster map's life (whatever its members), to tell which keys may share one.
   */
  ring(): HashRing;
  /**
   * Whether a key's reads may be served by another node than its writes (a replication factor
   * above 1: writes at the head of its chain, reads at the tail), so a connection's commands of one
   * key must wait for each other to keep their order (`KeyOrder`).
   */
  readsLeaveTheHead(): boolean;
  /** The balancer's limits (key, value and batch sizes). */
  readonly limits: ProtocolLimits;
  /** Most bytes of values one answer may gather (an MGET read in parts): the connection's output bound. */
  readonly maxAnswerBytes: number;
  /** The users of the users file / token; authentication is required when it has any. */
  readonly users: UserDirectory | undefined;
  /**
   * Failed client authentications per source address, shared with the native port: AUTH from a
   * locked-out address is refused before any scrypt.
   */
  readonly authFailures: AuthFailureBudget;
  /**
   * Checks AUTH's passwords against the stored verifiers: a bounded number of scrypts at once,
   * waiting ones in turns by address, a right password remembered.
   */
  readonly passwordChecks: PasswordChecks;
  /** Without users, accept clients from loopback addresses only (as Redis's protected mode). */
  readonly protectedMode: boolean;
  /** The command table (COMMAND lists it). */
  readonly commands: CommandTable;
  /** Gives an authenticated connection a client slot; false when every slot is taken. */
  admit(connection: RespConnection): boolean;
  /** Facts for INFO and HELLO. */
  facts(): ServerFacts;
  /** How many replicas besides its head every acknowledged write has now (WAIT's answer). */
  replicasOfEveryWrite(): number;
  /** DBSIZE of the cluster (the balancer's, as on the native port). */
  dbSize(): Promise<number>;
  /** The nodes' memory cap and eviction policy (CONFIG GET `maxmemory`, `maxmemory-policy`). */
  memoryConfig(): Promise<MemoryConfig>;
  /** FLUSHALL of the cluster (the balancer's, as on the native port): resolves to the keys deleted. */
  flush(): Promise<number>;
  /** One page of the cluster-wide SCAN (the balancer's, as on the native port). */
  scan(request: ScanRequest, grant: UserGrant | undefined): Promise<WithoutId<KeysResponse>>;
}
