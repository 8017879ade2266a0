/**
 * The peers dstore is measured against, as local processes: Redis servers, twemproxy (nutcracker)
 * in front of three of them, and a three-master Redis Cluster. Debian packages them
 * (`apt-get install -y redis-server redis-tools nutcracker`); {@link missingPeerTools} says which
 * are absent. Everything runs on loopback from a temp folder and is stopped by {@link stopPeers}.
 * The one place that configures these peers (bench:peers and the redis-benchmark reference of
 * `pnpm bench` use it).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { sleep } from './cluster.js';

/** The Debian packages that provide the peers' binaries. */
export const PEER_PACKAGES = 'redis-server redis-tools nutcracker';

/** A process started here. */
export interface PeerProcess {
  readonly name: string;
  readonly pid: number;
  readonly port: number;
  readonly child: ChildProcess;
}

/** A running peer system: its processes and the address(es) a client connects to. */
export interface PeerSystem {
  readonly processes: PeerProcess[];
  /** Where the load connects: the proxy, or the cluster's seed nodes. */
  readonly endpoints: { readonly host: string; readonly port: number }[];
}

/** The tools of `tools` that are not on PATH. */
export function missingPeerTools(tools: readonly string[]): string[] {
  return tools.filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);
}

/** A free loopback TCP port (bound and released; good enough for a benchmark). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Spawns `command` (stdio ignored) from `dir`, serving on `port`. */
export function start(
  name: string,
  command: string,
  args: readonly string[],
  port: number,
  dir: string,
): PeerProcess {
  const child = spawn(command, args, { cwd: dir, stdio: ['ignore', 'ignore', 'ignore'] });
  return { name, pid: child.pid!, port, child };
}

/** Waits until `redis-cli -p port ping` answers PONG (a Redis server or twemproxy). */
export async function waitForPong(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ping = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), 'ping'], {
      encoding: 'utf8',
    });
    if (ping.stdout?.trim() === 'PONG') return;
    await sleep(50);
  }
  throw new Error(`nothing answers PING on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

/**
 * Starts one Redis server without persistence (`--save '' --appendonly no`), like a cache, which
 * is what twemproxy fronts and what the memory engine is; `clusterEnabled` adds `--cluster-enabled`.
 */
export async function startRedis(name: string, dir: string, clusterEnabled = false): Promise<PeerProcess> {
  const port = await freePort();
  mkdirSync(join(dir, name), { recursive: true });
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  args.push('--daemonize', 'no', '--dir', join(dir, name));
  if (clusterEnabled) args.push('--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf');
  const proc = start(name, 'redis-server', args, port, dir);
  await waitForPong(port);
  return proc;
}

/**
 * twemproxy in front of three Redis servers: ketama on fnv1a_64 (its usual setup), no host
 * ejection (fail fast, as dstore does), one server connection per Redis.
 */
export async function startTwemproxy(dir: string): Promise<PeerSystem> {
  const processes: PeerProcess[] = [];
  try {
    for (let i = 1; i <= 3; i++) processes.push(await startRedis(`redis-${i}`, dir));
    const port = await freePort();
    const config = join(dir, 'nutcracker.yml');
    writeFileSync(
      config,
      [
        'dstore_peers:',
        `  listen: 127.0.0.1:${port}`,
        '  hash: fnv1a_64',
        '  distribution: ketama',
        '  redis: true',
        '  timeout: 2000',
        '  auto_eject_hosts: false',
        '  servers:',
        ...processes.map((redis) => `    - 127.0.0.1:${redis.port}:1 ${redis.name}`),
        '',
      ].join('\n'),
    );
    const statsPort = await freePort();
    const args = ['-c', config, '-s', String(statsPort), '-o', join(dir, 'nutcracker.log')];
    processes.unshift(start('twemproxy', 'nutcracker', args, port, dir));
    await waitForPong(port);
    return { processes, endpoints: [{ host: '127.0.0.1', port }] };
  } catch (error) {
    await stopPeers(processes);
    throw error;
  }
}

/** A Redis Cluster of three masters (no replicas), all 16384 slots assigned and the state ok. */
export async function startRedisCluster(dir: string): Promise<PeerSystem> {
  const processes: PeerProcess[] = [];
  try {
    for (let i = 1; i <= 3; i++) processes.push(await startRedis(`cluster-${i}`, dir, true));
    const create = spawnSync(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...processes.map((redis) => `127.0.0.1:${redis.port}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    if (create.status !== 0)
      throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
    const deadline = Date.now() + 20_000;
    for (const redis of processes) {
      for (;;) {
        const info = spawnSync('redis-cli', ['-p', String(redis.port), 'cluster', 'info'], {
          encoding: 'utf8',
        });
        if (info.stdout?.includes('cluster_state:ok')) break;
        if (Date.now() > deadline) throw new Error(`Redis Cluster not ok on ${redis.port}: ${info.stdout}`);
        await sleep(100);
      }
    }
    return { processes, endpoints: processes.map((redis) => ({ host: '127.0.0.1', port: redis.port })) };
  } catch (error) {
    await stopPeers(processes);
    throw error;
  }
}

/** Stops processes started here (SIGTERM, SIGKILL after 5 s) and waits until they exited. */
export async function stopPeers(processes: readonly PeerProcess[]): Promise<void> {
  await Promise.all(
    processes.map(async (proc) => {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => proc.child.once('exit', () => resolve()));
      proc.child.kill('SIGTERM');
      const killer = setTimeout(() => proc.child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
    }),
  );
}
