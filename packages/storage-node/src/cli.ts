#!/usr/bin/env node
import { type PeerTlsOptions, readPeerTlsFiles } from '@dstore/protocol';
/**
 * `dstore-node`: runs one storage node. Prints one JSON "ready" line on stdout once listening
 * (scripts parse it), logs to stderr with pino, stops gracefully on SIGTERM/SIGINT.
 */
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
import { type Logger, pino } from 'pino';
import { version } from '../package.json';
import type { EvictionPolicy } from './engines/index.js';
import { DEFAULT_NODE_PORT, resolveNodeOptions, type StorageNodeOptions } from './options.js';
import { createStorageNode, type StorageNode } from './storage-node.js';

/** The shared parsers (`@dstore/protocol/internal`) as commander option parsers: a bad value is a usage error. */
const arg = <T>(parse: (text: string) => T): ((text: string) => T) =>
  optionParser(parse, (message) => new InvalidArgumentError(message));
const integer = (min: number, max: number) => arg((text) => parseInteger(text, { min, max }));
const duration = (min: number) => arg((text) => parseDuration(text, { min }));

/** Collects a repeatable option: `--join a --join b,c` gives ['a', 'b,c'] (parsed later, as one list). */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** A byte size for commander (the shared parser): a bad one is a usage error. */
const byteSize = arg((text) => parseByteSize(text));

function positiveNumber(text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new InvalidArgumentError('expected a positive number.');
  return value;
}

interface CliFlags {
  host: string;
  port: number;
  id?: string;
  engine: 'memory' | 'lmdb';
  dataDir?: string;
  durability: 'flush' | 'commit';
  mapSize: number;
  maxMemory: number;
  maxClientOutput: number;
  eviction: EvictionPolicy;
  join?: string[];
  advertiseHost?: string;
  weight: number;
  maxConnections: number;
  idleTimeout: number;
  frameTimeout: number;
  token?: string;
  users?: string;
  clusterSecret?: string;
  protectedMode: boolean;
  authTimeout: number;
  authFailureLimit: number;
  authFailureWindow: number;
  authPace: number;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  heartbeatInterval: number;
  drainTimeout: number;
  leaveTimeout: number;
  migrationRate: number;
  replicationQueueBytes: number;
  replicationTimeout: number;
  logLevel: string;
}

function buildProgram(): Command {
  return new Command('dstore-node')
    .description('Run a dstore storage node: a TCP server holding keys in memory or durably on LMDB.')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .version(version, '-V, --version', 'print the version of @dstore/storage-node')
    .option('--port <port>', 'port to bind (0 = any free port)', integer(0, 65_535), DEFAULT_NODE_PORT)
    .option(
      '--id <id>',
      'node id used by the ring and answered to HELLO; keep it stable across restarts (default: node-<hostname>-<port>)',
    )
    .addOption(
      new Option('--engine <engine>', 'storage engine').choices(['memory', 'lmdb']).default('memory'),
    )
    .option(
      '--data-dir <dir>',
      "LMDB data directory, also holding the node's identity file node-identity (required with --engine lmdb)",
    )
    .addOption(
      new Option(
        '--durability <mode>',
        'lmdb: acknowledge writes once on disk (flush) or once committed (commit)',
      )
        .choices(['flush', 'commit'])
        .default('flush'),
    )
    .option(
      '--map-size <bytes>',
      'lmdb: most bytes the data may occupy (k/m/g suffixes; 0 = no fixed limit: the free disk less a 2% reserve); writes past it get OUT_OF_SPACE',
      byteSize,
      0,
    )
    .option(
      '--max-client-output <bytes>',
      'most bytes waiting to be written to direct clients, every client connection together; past it the one holding the most is dropped (k/m/g suffixes)',
      byteSize,
      1024 * 1024 * 1024,
    )
    .option(
      '--max-memory <bytes>',
      'memory: cap on the engine footprint (k/m/g suffixes; 0 = none); RSS is this plus a fixed overhead',
      byteSize,
      0,
    )
    .addOption(
      new Option('--eviction <policy>', 'memory: what a write past --max-memory does')
        .choices(['noeviction', 'allkeys-lru', 'allkeys-random'])
        .default('noeviction'),
    )
    .option(
      '--join <host:port[,host:port...]>',
      "balancer's client address to register with (JOIN, HEARTBEAT, LEAVE); several, comma-separated or repeated, fail over in order",
      collect,
    )
    .option(
      '--advertise-host <host>',
      'host the balancer should dial (default: --host, or 127.0.0.1 for 0.0.0.0/::)',
    )
    .option('--weight <weight>', 'ring weight announced in JOIN', positiveNumber, 1)
    .option(
      '--max-connections <n>',
      'most open connections; the excess get BUSY',
      integer(1, 1_000_000),
      1024,
    )
    .option(
      '--idle-timeout <ms>',
      'close connections idle this long (ms, or 5m; 0 = never)',
      duration(0),
      300_000,
    )
    .option(
      '--frame-timeout <ms>',
      'a started frame must be complete within this time (ms, or 10s)',
      duration(1),
      10_000,
    )
    .option(
      '--token <token>',
      `password of the user default for clients connecting here (default: env ${EnvVar.TOKEN}, else none)`,
    )
    .option('--users <file>', 'users file for clients connecting here; reloaded on SIGHUP')
    .option(
      '--cluster-secret <secret>',
      `secret every balancer and node proves to the others (default: env ${EnvVar.CLUSTER_SECRET}, else none)`,
    )
    .option(
      '--no-protected-mode',
      'accept unauthenticated peers and clients from any address, not only loopback',
    )
    .option(
      '--auth-timeout <ms>',
      'a connection must authenticate within this time (ms, or 5s)',
      duration(1),
      5000,
    )
    .option(
      '--auth-failure-limit <n>',
      'failed client authentications from one address that lock it out for --auth-failure-window; 0: never (a lockout refuses every client at the address)',
      integer(0, 1_000_000),
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
      '--tls-cert <file>',
      'serve TLS only with this PEM certificate, also presented when dialing balancers and nodes (default: plaintext)',
    )
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option(
      '--tls-ca <file>',
      'PEM CA bundle that balancers and nodes are verified against (mutual TLS between peers)',
    )
    .option(
      '--heartbeat-interval <ms>',
      'interval between HEARTBEATs to the balancer (ms, or 1s); with replication below half the balancer --lease',
      duration(10),
      500,
    )
    .option(
      '--drain-timeout <ms>',
      'on shutdown, longest time to keep answering requests already sent (ms, or 2s)',
      duration(0),
      2000,
    )
    .option(
      '--leave-timeout <ms>',
      "on shutdown, longest wait for the balancer to move this node's keys away (LEAVE answered; ms, or 1m)",
      duration(0),
      60_000,
    )
    .option(
      '--migration-rate <keys/s>',
      'most keys per second streamed to one new owner during a key migration (0 = unbounded)',
      integer(0, 2 ** 31 - 1),
      5000,
    )
    .option(
      '--replication-queue-bytes <bytes>',
      'replication (factor above 1): most bytes of writes held unacknowledged towards one successor (k/m/g suffixes); writes past it get BUSY',
      byteSize,
      16 * 1024 * 1024,
    )
    .option(
      '--replication-timeout <ms>',
      'replication (factor above 1): deadline of one REPLICATE forward (ms, or 2s); past it the writes it carries fail as indeterminate',
      duration(1),
      2000,
    )
    .addOption(
      new Option('--log-level <level>', 'pino log level (logs go to stderr)')
        .choices([...LOG_LEVELS])
        .default('info'),
    )
    .addHelpText(
      'after',
      `\nExit codes: 0 stopped cleanly, 1 failure, 2 usage error. Environment: ${EnvVar.TOKEN}, ${EnvVar.CLUSTER_SECRET}.`,
    )
    .showHelpAfterError('(run dstore-node --help for every option)')
    .exitOverride();
}

function toNodeOptions(flags: CliFlags, logger: Logger, tls: PeerTlsOptions | undefined): StorageNodeOptions {
  return {
    ...(tls === undefined ? {} : { tls }),
    host: flags.host,
    port: flags.port,
    id: flags.id,
    engine: flags.engine,
    dataDir: flags.dataDir,
    durability: flags.durability,
    mapSize: flags.mapSize,
    maxMemory: flags.maxMemory,
    maxClientOutputBytes: flags.maxClientOutput,
    eviction: flags.eviction,
    // One list for resolveNodeOptions' parser, whether given comma-separated or repeated.
    join: flags.join?.join(','),
    advertiseHost: flags.advertiseHost,
    weight: flags.weight,
    maxConnections: flags.maxConnections,
    idleTimeoutMs: flags.idleTimeout,
    frameTimeoutMs: flags.frameTimeout,
    token: flags.token ?? process.env[EnvVar.TOKEN],
    usersFile: flags.users,
    clusterSecret: flags.clusterSecret ?? process.env[EnvVar.CLUSTER_SECRET],
    protectedMode: flags.protectedMode,
    authTimeoutMs: flags.authTimeout,
    authFailureLimit: flags.authFailureLimit,
    authFailureWindowMs: flags.authFailureWindow,
    authPaceMs: flags.authPace,
    heartbeatIntervalMs: flags.heartbeatInterval,
    drainTimeoutMs: flags.drainTimeout,
    leaveTimeoutMs: flags.leaveTimeout,
    migrationRateKeysPerSecond: flags.migrationRate,
    replicationQueueBytes: flags.replicationQueueBytes,
    replicationTimeoutMs: flags.replicationTimeout,
    logger,
  };
}

function parseFlags(argv: readonly string[]): CliFlags {
  const program = buildProgram();
  try {
    program.parse(argv as string[]);
  } catch (error) {
    // Commander already printed the message (or the help).
    if (error instanceof CommanderError) process.exit(error.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE);
    throw error;
  }
  return program.opts<CliFlags>();
}

/** First signal: graceful stop then exit 0. Second signal: give up at once with exit 1. */
function stopOnSignals(node: StorageNode, logger: Logger): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting without finishing the shutdown');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    node.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: (error as Error).message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', () => {
    node.reloadUsers().then(
      () => logger.info('users reloaded'),
      (error: unknown) =>
        logger.error({ err: (error as Error).message }, 'users reload failed: the previous users stay'),
    );
  });
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv);
  const logger = pino(
    { name: 'dstore-node', level: flags.logLevel },
    pino.destination({ dest: 2, sync: true }),
  );
  let options: StorageNodeOptions;
  let advertiseHost: string;
  try {
    const tls = await readPeerTlsFiles({ cert: flags.tlsCert, key: flags.tlsKey, ca: flags.tlsCa });
    options = toNodeOptions(flags, logger, tls);
    advertiseHost = resolveNodeOptions(options).advertiseHost;
  } catch (error) {
    process.stderr.write(`dstore-node: ${(error as Error).message}\n`);
    process.exit(ExitCode.USAGE);
  }
  const node = createStorageNode(options);
  stopOnSignals(node, logger);
  let address: Awaited<ReturnType<StorageNode['start']>>;
  try {
    address = await node.start();
  } catch (error) {
    logger.fatal({ err: (error as Error).message }, 'cannot start');
    process.exit(1);
  }
  const ready = {
    event: 'ready',
    service: 'dstore-node',
    id: node.id,
    host: advertiseHost,
    port: address.port,
  };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
}

void main();
