#!/usr/bin/env node
import { readPeerTlsFiles } from '@dstore/protocol';
import {
  EnvVar,
  ExitCode,
  LOG_LEVELS,
  optionParser,
  parseByteSize,
  parseDuration,
  parseInteger,
} from '@dstore/protocol/internal';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { version } from '../package.json';
import { Balancer } from './balancer.js';
import { DEFAULT_HASH_TAG, DEFAULT_REPLICATION_FACTOR, MAX_REPLICATION_FACTOR } from './cluster-map.js';
import {
  type BalancerHashAlgorithm,
  DEFAULT_ADMIN_PORT,
  DEFAULT_BALANCER_PORT,
  DEFAULT_ETCD_PREFIX,
  DEFAULT_FAILURE_TIMEOUT_MS,
  DEFAULT_LEASE_MS,
  loadConfigFile,
  parseNodeAddress,
  type StaticNodeSpec,
} from './config.js';
import { createLogger } from './logger.js';

interface CliFlags {
  host: string;
  port: number;
  adminPort: number;
  respPort?: number;
  respHost?: string;
  node: StaticNodeSpec[];
  config?: string;
  hash: BalancerHashAlgorithm;
  hashTag?: string;
  replicationFactor?: number;
  experimentalReplication?: boolean;
  requestTimeout: number;
  heartbeatTimeout: number;
  failureTimeout: number;
  deadAfter?: number;
  lease: number;
  maxConnections: number;
  maxInFlight: number;
  maxClientBytesInFlight: number;
  maxClientOutput: number;
  token?: string;
  clusterSecret?: string;
  users?: string;
  protectedMode: boolean;
  authTimeout: number;
  authFailureLimit: number;
  authFailureWindow: number;
  authPace: number;
  clientIdleTimeout: number;
  frameTimeout: number;
  adminHost: string;
  adminToken?: string;
  adminAuth: 'mutating' | 'all';
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  id?: string;
  dataDir?: string;
  etcd?: string;
  etcdPrefix: string;
  etcdLeaseTtl: number;
  logLevel: string;
}

/** The shared parsers (`@dstore/protocol/internal`) as commander option parsers: a bad value is a usage error. */
const arg = <T>(parse: (text: string) => T): ((text: string) => T) =>
  optionParser(parse, (message) => new InvalidArgumentError(message));
const integer = (min: number, max?: number) =>
  arg((text) => parseInteger(text, max === undefined ? { min } : { min, max }));
const duration = (min: number) => arg((text) => parseDuration(text, { min }));
const byteSize = (min: number) => arg((text) => parseByteSize(text, { min }));
const collectNode = (text: string, previous: StaticNodeSpec[]): StaticNodeSpec[] => [
  ...previous,
  arg(parseNodeAddress)(text),
];

/** `{ [name]: value }` when the value is set (non-empty), else `{}`: for optional options. */
function optional<K extends string>(name: K, value: string | undefined): { [key in K]?: string } {
  return value === undefined || value === '' ? {} : ({ [name]: value } as { [key in K]?: string });
}

function buildProgram(): Command {
  return (
    new Command('dstore-balancer')
      .description('dstore balancer: routes each key to its owner on a consistent-hash ring of storage nodes')
      .version(version, '-V, --version', 'print the version of @dstore/balancer')
      .option('--host <host>', 'address to listen on (clients and node registrations)', '127.0.0.1')
      .option('--port <port>', 'client port (0 = any free port)', integer(0, 65535), DEFAULT_BALANCER_PORT)
      .option(
        '--admin-port <port>',
        'admin HTTP port (0 = any free port)',
        integer(0, 65535),
        DEFAULT_ADMIN_PORT,
      )
      .option(
        '--resp-port <port>',
        'serve Redis clients (RESP2/RESP3) on this port too (0 = any free port; default: no RESP port)',
        integer(0, 65535),
      )
      .option('--resp-host <host>', 'address of the RESP port (default: --host)')
      .option(
        '--node <[id=]host:port>',
        'static storage node (repeatable); id defaults to host:port',
        collectNode,
        [],
      )
      .option('--config <file>', 'JSON cluster file: {"nodes":[{"id","host","port","weight"}]}')
      .addOption(
        new Option('--hash <algorithm>', 'ring algorithm').choices(['vnode', 'ketama']).default('vnode'),
      )
      .option(
        '--hash-tag <chars>',
        `hash tag of a new cluster map: two characters, keys holding {tag} are placed by the tag, as Redis Cluster (default: ${DEFAULT_HASH_TAG}; none: every key placed whole; a stored map keeps its own)`,
      )
      .option(
        '--replication-factor <n>',
        `copies of each key, stored in a new cluster map and fixed for its life (default: the stored map's, ${DEFAULT_REPLICATION_FACTOR} for a new one, 1 with static --node nodes; a key has min(n, live nodes) copies; 1: one copy, no leases)`,
        integer(1, MAX_REPLICATION_FACTOR),
      )
      // Deprecated, a no-op kept for one release so old scripts start (the balancer warns).
      .addOption(new Option('--experimental-replication', 'deprecated: no effect').hideHelp())
      .option('--request-timeout <ms>', 'deadline of every forwarded request (ms, or 2s)', duration(1), 2000)
      .option(
        '--heartbeat-timeout <ms>',
        'a JOINed node without heartbeat for this long is down (ms, or 3s)',
        duration(1),
        3000,
      )
      .option(
        '--failure-timeout <ms>',
        'replication: an up node not heard from for this long is marked failed (ms, or 5s; at least 2 x --lease)',
        duration(1),
        DEFAULT_FAILURE_TIMEOUT_MS,
      )
      .option(
        '--dead-after <ms>',
        'replication: a node failed this long is declared dead and its ranges re-replicated (ms, or 10m; default: never, see dstore node remove --dead)',
        duration(1),
      )
      .option(
        '--lease <ms>',
        "replication: lease granted to up nodes in heartbeat answers (ms, or 2s); nodes' heartbeat interval must be below half of it",
        duration(1),
        DEFAULT_LEASE_MS,
      )
      .option('--max-connections <n>', 'most client connections', integer(1), 1024)
      .option(
        '--max-in-flight <n>',
        'most requests in flight per node connection (client connections get fair shares past half)',
        integer(1),
        4096,
      )
      .option(
        '--token <token>',
        `password of the one read-write user default (env ${EnvVar.TOKEN}); never crosses the wire`,
      )
      .option(
        '--users <file>',
        'users file (JSON; passwords hashed with `dstore hash-password`); reloaded on SIGHUP',
      )
      .option(
        '--cluster-secret <secret>',
        `secret every balancer and node proves to the others (env ${EnvVar.CLUSTER_SECRET}, at least 16 characters)`,
      )
      .option(
        '--no-protected-mode',
        'accept unauthenticated peers (no cluster secret) and clients (no users) from any address, not only loopback',
      )
      .option(
        '--auth-timeout <ms>',
        'a connection must authenticate within this time (ms, or 5s)',
        duration(1),
        5000,
      )
      .option(
        '--auth-failure-limit <n>',
        'failed client authentications from one address (both ports) that lock it out for --auth-failure-window; 0: never (a lockout refuses every client at the address)',
        integer(0),
        0,
      )
      .option(
        '--auth-failure-window <ms>',
        'window failed authentications are counted in, and length of a lockout (ms, or 60s)',
        duration(1),
        60_000,
      )
      .option(
        '--auth-pace <ms>',
        'an address with 10 failed client authentications in its window may try once per this (ms, or 1s); 0: no pacing',
        duration(0),
        1000,
      )
      .option(
        '--client-idle-timeout <ms>',
        'close client connections idle this long (ms, or 5m; 0 = never)',
        duration(0),
        300_000,
      )
      .option(
        '--frame-timeout <ms>',
        'a client frame or RESP command that started arriving must be complete within this time (ms, or 10s)',
        duration(1),
        10_000,
      )
      .option('--admin-host <host>', 'address of the admin HTTP server', '127.0.0.1')
      .option(
        '--admin-token <token>',
        `Bearer token of the admin API (env ${EnvVar.ADMIN_TOKEN}); without it node removal by HTTP is off`,
      )
      .addOption(
        new Option('--admin-auth <scope>', 'admin endpoints that need the token')
          .choices(['mutating', 'all'])
          .default('mutating'),
      )
      .option(
        '--tls-cert <file>',
        'serve TLS only (client port; admin over HTTPS) with this PEM certificate, also presented when dialing nodes and balancers (default: plaintext)',
      )
      .option('--tls-key <file>', 'PEM private key of --tls-cert')
      .option(
        '--tls-ca <file>',
        'PEM CA bundle that nodes and balancers are verified against; balancers and nodes are then accepted as peers only with a client certificate it signed',
      )
      .option(
        '--max-client-bytes-in-flight <bytes>',
        'most bytes of large requests one client connection may have in flight to the nodes (reading it pauses past this; k/m/g suffixes)',
        byteSize(1),
        4 * 1024 * 1024,
      )
      .option(
        '--max-client-output <bytes>',
        'most bytes waiting to be written to clients, every client connection together; past it the one holding the most is dropped (k/m/g suffixes)',
        byteSize(1),
        1024 * 1024 * 1024,
      )
      .option('--id <id>', 'balancer id answered in HELLO (default balancer-<pid>)')
      .option(
        '--data-dir <dir>',
        'keep the authoritative cluster map here (atomic replace + fsync); without it the map lives in memory and a restart starts a new cluster (nodes still holding data of the old one are refused)',
      )
      .option(
        '--etcd <urls>',
        'keep the cluster map in etcd (comma-separated http://host:port): balancers with the same etcd and prefix are one cluster',
      )
      .option('--etcd-prefix <prefix>', 'etcd key prefix of this cluster', DEFAULT_ETCD_PREFIX)
      .option(
        '--etcd-lease-ttl <s>',
        "coordinator lease TTL in seconds: how long a dead coordinator's role lasts",
        integer(1),
        5,
      )
      .addOption(
        new Option('--log-level <level>', 'pino log level (logs go to stderr)')
          .choices([...LOG_LEVELS])
          .default('info'),
      )
      .addHelpText(
        'after',
        `\nExit codes: 0 stopped cleanly, 1 failure, 2 usage error. Environment: ${EnvVar.TOKEN}, ${EnvVar.CLUSTER_SECRET}, ${EnvVar.ADMIN_TOKEN}.`,
      )
      .showHelpAfterError('(run dstore-balancer --help for every option)')
      .exitOverride()
  );
}

/** Parses the command line; a usage error exits 2 (commander printed it), --help/--version 0. */
function parseFlags(): CliFlags {
  const program = buildProgram();
  try {
    program.parse();
  } catch (error) {
    if (error instanceof CommanderError) process.exit(error.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE);
    throw error;
  }
  return program.opts<CliFlags>();
}

async function main(): Promise<void> {
  const flags = parseFlags();
  const token = flags.token ?? process.env[EnvVar.TOKEN];
  const logger = createLogger(flags.logLevel);
  const fromFile = flags.config ? await loadConfigFile(flags.config) : [];
  const tls = await readPeerTlsFiles({ cert: flags.tlsCert, key: flags.tlsKey, ca: flags.tlsCa });
  const balancer = new Balancer({
    host: flags.host,
    port: flags.port,
    adminPort: flags.adminPort,
    ...(flags.respPort === undefined ? {} : { respPort: flags.respPort }),
    ...optional('respHost', flags.respHost),
    nodes: [...fromFile, ...flags.node],
    hash: flags.hash,
    ...(flags.hashTag === undefined ? {} : { hashTag: flags.hashTag === 'none' ? '' : flags.hashTag }),
    ...(flags.replicationFactor === undefined ? {} : { replicationFactor: flags.replicationFactor }),
    ...(flags.experimentalReplication === true ? { experimentalReplication: true } : {}),
    requestTimeoutMs: flags.requestTimeout,
    heartbeatTimeoutMs: flags.heartbeatTimeout,
    failureTimeoutMs: flags.failureTimeout,
    ...(flags.deadAfter === undefined ? {} : { deadAfterMs: flags.deadAfter }),
    leaseMs: flags.lease,
    maxConnections: flags.maxConnections,
    maxInFlightPerNode: flags.maxInFlight,
    maxClientBytesInFlight: flags.maxClientBytesInFlight,
    maxClientOutputBytes: flags.maxClientOutput,
    logger,
    adminHost: flags.adminHost,
    adminAuth: flags.adminAuth,
    authTimeoutMs: flags.authTimeout,
    authFailureLimit: flags.authFailureLimit,
    authFailureWindowMs: flags.authFailureWindow,
    authPaceMs: flags.authPace,
    clientIdleTimeoutMs: flags.clientIdleTimeout,
    frameTimeoutMs: flags.frameTimeout,
    protectedMode: flags.protectedMode,
    ...optional('token', token),
    ...optional('clusterSecret', flags.clusterSecret ?? process.env[EnvVar.CLUSTER_SECRET]),
    ...optional('adminToken', flags.adminToken ?? process.env[EnvVar.ADMIN_TOKEN]),
    ...optional('usersFile', flags.users),
    ...(tls === undefined ? {} : { tls }),
    ...(flags.id === undefined ? {} : { id: flags.id }),
    ...(flags.dataDir === undefined ? {} : { dataDir: flags.dataDir }),
    ...(flags.etcd === undefined
      ? {}
      : {
          etcd: {
            endpoints: flags.etcd.split(',').filter((url) => url !== ''),
            prefix: flags.etcdPrefix,
            leaseTtlSeconds: flags.etcdLeaseTtl,
          },
        }),
  });
  const address = await balancer.start();
  const ready = {
    event: 'ready',
    service: 'dstore-balancer',
    host: address.host,
    port: address.port,
    adminPort: address.adminPort,
    // Only with --resp-port: the ready line of a balancer without one is unchanged.
    ...(address.respPort >= 0 ? { respPort: address.respPort } : {}),
  };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
  let signals = 0;
  const shutdown = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting without draining');
      process.exit(1);
    }
    logger.info({ signal }, 'shutting down');
    balancer.stop().then(
      () => {
        logger.flush();
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.on('SIGHUP', () => {
    balancer
      .reloadUsers()
      .catch((error: unknown) =>
        logger.error({ err: (error as Error).message }, 'users reload failed: the previous users stay'),
      );
  });
}

main().catch((error: unknown) => {
  const code = (error as { code?: string }).code;
  process.stderr.write(`dstore-balancer: ${(error as Error).message}${code ? ` (${code})` : ''}\n`);
  // A bad option value found past commander (a --node list, the config file) is a usage error.
  process.exit(code === 'INVALID_ARGUMENT' ? ExitCode.USAGE : ExitCode.FAILURE);
});
