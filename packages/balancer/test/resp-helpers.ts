import { execFile, spawn } from 'node:child_process';
import { Redis } from 'ioredis';
import type { Balancer, BalancerOptions } from '../src/index.js';
import {
  type NodeReady,
  type Resources,
  type Spawned,
  spawnNode,
  startBalancer,
  waitForNodesUp,
} from './helpers.js';

/** A balancer with a RESP port and `nodes` real storage-node processes (node `i` with `nodeArgs(i)`), all stopped at release. */
export async function startRespCluster(
  resources: Resources,
  nodes: number,
  options: BalancerOptions = {},
  nodeArgs: (index: number) => string[] = () => [],
): Promise<{ balancer: Balancer; respPort: number; nodes: Spawned<NodeReady>[] }> {
  const balancer = await startBalancer(resources, { replicationFactor: 1, respPort: 0, ...options });
  const spawned = await Promise.all(
    Array.from({ length: nodes }, (_, index) =>
      spawnNode(resources, `resp-node-${index + 1}`, balancer.address.port, nodeArgs(index)),
    ),
  );
  await waitForNodesUp(balancer, nodes);
  return { balancer, respPort: balancer.address.respPort, nodes: spawned };
}

/** Runs a command line tool; resolves with its exit code and output (never rejects). */
export function run(
  command: string,
  args: string[],
  input?: string | Buffer,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

/** `redis-cli -p port args...`: its output, trimmed. */
export async function redisCli(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-p', String(port), ...args], (error, stdout) =>
      error ? reject(error) : resolve(stdout.trim()),
    );
  });
}

/** One key owned by each node of the balancer's ring (found by asking the ring). */
export function keyPerNode(balancer: Balancer, prefix: string): string[] {
  const owners = new Map<string, string>();
  const nodes = balancer.ring.nodes().length;
  for (let index = 0; owners.size < nodes && index < 10_000; index++) {
    const key = `${prefix}${index}`;
    const owner = balancer.ring.get(key);
    if (!owners.has(owner)) owners.set(owner, key);
  }
  return [...owners.values()];
}

/** Runs `lines` as commands on one redis-cli connection to `port` (its stdin); resolves its output lines. */
export function redisCliScript(port: number, lines: readonly string[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = execFile('redis-cli', ['-p', String(port)], (error, stdout) =>
      error ? reject(error) : resolve(stdout.split('\n').filter((line) => line !== '')),
    );
    child.stdin?.end(`${lines.join('\n')}\n`);
  });
}

/** An ioredis client of `port` (not connected yet: `lazyConnect`), disconnected at release. */
export function ioredisOf(resources: Resources, port: number): Redis {
  const client = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0 });
  resources.add(() => client.disconnect());
  return client;
}
