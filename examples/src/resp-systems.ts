/**
 * The systems the RESP benchmarks (`bench:resp`, `bench:bitmap`) drive with redis-benchmark: this
 * checkout's (or another built checkout's) balancer + 3 memory nodes behind `--resp-port`, and
 * twemproxy + 3 Redis. Each says where to connect and which processes serve it (for CPU per op).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { startCluster, stopCluster } from './cluster.js';
import { freePort, missingPeerTools, PEER_PACKAGES, startTwemproxy, stopPeers } from './redis-peers.js';

/** A system under test: where redis-benchmark connects, and which processes serve it. */
export interface System {
  readonly label: string;
  readonly port: number;
  readonly processes: readonly { readonly name: string; readonly pid: number }[];
  readonly stop: () => Promise<void>;
}

/** This checkout's balancer + 3 memory nodes, or with `distRoot` those of another built checkout. */
export async function startDstore(dir: string, distRoot?: string, replicationFactor = 1): Promise<System> {
  const root = join(dir, distRoot === undefined ? 'dstore' : 'baseline');
  const respPort = await freePort();
  const state = await startCluster({
    root,
    engine: 'memory',
    nodes: 3,
    // One copy per key by default, as the Redis setups it is compared with keep.
    replicationFactor,
    balancerArgs: ['--resp-port', String(respPort)],
    ...(distRoot === undefined ? {} : { distRoot }),
  });
  return {
    label: `dstore RESP${distRoot === undefined ? '' : ' (baseline build)'}: balancer + 3 memory nodes${replicationFactor === 1 ? '' : `, factor ${replicationFactor}`}`,
    port: respPort,
    processes: [state.balancer, ...state.nodes].map((proc) => ({ name: proc.id, pid: proc.pid })),
    stop: async () => void (await stopCluster(root)),
  };
}

/** twemproxy + 3 Redis, the system the RESP port is compared with. */
export async function startPeer(dir: string): Promise<System> {
  const system = await startTwemproxy(join(dir, 'twemproxy'));
  return {
    label: 'twemproxy + 3 Redis',
    port: system.endpoints[0]!.port,
    processes: system.processes.map((proc) => ({ name: proc.name, pid: proc.pid })),
    stop: () => stopPeers(system.processes),
  };
}

/**
 * Runs redis-benchmark against `port` with `args` (`-t ...` or a command of its own) in CSV mode;
 * resolves with requests/s by test name (a command of its own: by its first word, e.g. `GETBIT`).
 */
export function runRedisBenchmark(port: number, args: readonly string[]): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const child = spawn('redis-benchmark', ['-p', String(port), '--csv', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    child.once('close', (code) => {
      if (code !== 0) {
        reject(new Error(`redis-benchmark exited with ${code}: ${err}${out}`));
        return;
      }
      const rps: Record<string, number> = {};
      for (const line of out.split('\n')) {
        const match = /^"([A-Z_]+)[^"]*","([0-9.]+)"/.exec(line);
        if (match) rps[match[1]!] = Number(match[2]);
      }
      resolve(rps);
    });
  });
}

/** Exits (status 1, with the apt-get line) when a tool the RESP benchmarks run is missing. */
export function requireRespTools(): void {
  const missing = missingPeerTools(['redis-server', 'redis-cli', 'redis-benchmark', 'nutcracker']);
  if (missing.length > 0) {
    console.error(`missing: ${missing.join(', ')} (apt-get install -y ${PEER_PACKAGES})`);
    process.exit(1);
  }
}
