#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { Balancer } from './balancer.js';
import {
  type BalancerHashAlgorithm,
  DEFAULT_ADMIN_PORT,
  DEFAULT_BALANCER_PORT,
  DEFAULT_ETCD_PREFIX,
  loadConfigFile,
  parseNodeAddress,
  type StaticNodeSpec,
} from './config.js';
import { createLogger } from './logger.js';

interface CliFlags {
  host: string;
  port: number;
  adminPort: number;
  node: StaticNodeSpec[];
  config?: string;
  hash: BalancerHashAlgorithm;
  requestTimeout: number;
  heartbeatTimeout: number;
  maxConnections: number;
  maxInFlight: number;
  maxClientBytesInFlight: number;
  token?: string;
  id?: string;
  dataDir?: string;
  etcd?: string;
  etcdPrefix: string;
  etcdLeaseTtl: number;
  logLevel: string;
}

function integer(min: number, max = Number.MAX_SAFE_INTEGER): (text: string) => number {
  return (text) => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    }
    return value;
  };
}

function collectNode(text: string, previous: StaticNodeSpec[]): StaticNodeSpec[] {
  try {
    return [...previous, parseNodeAddress(text)];
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function buildProgram(): Command {
  return new Command('dstore-balancer')
    .description('dstore balancer: routes each key to its owner on a consistent-hash ring of storage nodes')
    .option('--host <host>', 'address to listen on (clients and node registrations)', '127.0.0.1')
    .option('--port <port>', 'client port (0 = any free port)', integer(0, 65535), DEFAULT_BALANCER_PORT)
    .option(
      '--admin-port <port>',
      'admin HTTP port (0 = any free port)',
      integer(0, 65535),
      DEFAULT_ADMIN_PORT,
    )
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
    .option('--request-timeout <ms>', 'deadline of every forwarded request', integer(1), 2000)
    .option(
      '--heartbeat-timeout <ms>',
      'a JOINed node without heartbeat for this long is down',
      integer(1),
      3000,
    )
    .option('--max-connections <n>', 'most client connections', integer(1), 1024)
    .option('--max-in-flight <n>', 'most requests in flight per node connection', integer(1), 4096)
    .option(
      '--max-client-bytes-in-flight <bytes>',
      'most bytes of large requests one client connection may have in flight to the nodes (reading it pauses past this)',
      integer(1),
      4 * 1024 * 1024,
    )
    .option('--token <token>', 'shared secret clients and nodes must send in HELLO')
    .option('--id <id>', 'balancer id answered in HELLO (default balancer-<pid>)')
    .option(
      '--data-dir <dir>',
      'keep the authoritative cluster map here (atomic replace + fsync); without it the map lives in memory and a restart starts a new cluster',
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
    .option('--log-level <level>', 'pino log level (logs go to stderr)', 'info');
}

async function main(): Promise<void> {
  const program = buildProgram();
  program.parse();
  const flags = program.opts<CliFlags>();
  const logger = createLogger(flags.logLevel);
  const fromFile = flags.config ? await loadConfigFile(flags.config) : [];
  const balancer = new Balancer({
    host: flags.host,
    port: flags.port,
    adminPort: flags.adminPort,
    nodes: [...fromFile, ...flags.node],
    hash: flags.hash,
    requestTimeoutMs: flags.requestTimeout,
    heartbeatTimeoutMs: flags.heartbeatTimeout,
    maxConnections: flags.maxConnections,
    maxInFlightPerNode: flags.maxInFlight,
    maxClientBytesInFlight: flags.maxClientBytesInFlight,
    logger,
    ...(flags.token === undefined ? {} : { token: flags.token }),
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
  process.stdout.write(
    `${JSON.stringify({ event: 'ready', service: 'dstore-balancer', host: address.host, port: address.port, adminPort: address.adminPort })}\n`,
  );
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
}

main().catch((error: unknown) => {
  const code = (error as { code?: string }).code;
  process.stderr.write(`dstore-balancer: ${(error as Error).message}${code ? ` (${code})` : ''}\n`);
  process.exit(1);
});
