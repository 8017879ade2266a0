import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { Balancer, BalancerOptions } from '../src/index.js';
import {
  type NodeReady,
  type Resources,
  type Spawned,
  spawnNode,
  startBalancer,
  waitFor,
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
  return client(resources, { port });
}

/**
 * A redis-server (no password, nothing saved) on a unix socket in a temporary directory (nothing
 * on TCP), stopped at release: the reference a script's answers are compared with.
 */
export async function startRedisOnSocket(resources: Resources): Promise<string> {
  const directory = mkdtempSync(join(tmpdir(), 'dstore-redis-ref-'));
  const socket = join(directory, 'redis.sock');
  const server: ChildProcess = spawn(
    'redis-server',
    ['--port', '0', '--unixsocket', socket, '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  resources.add(() => {
    server.kill('SIGKILL');
    rmSync(directory, { recursive: true, force: true });
  });
  const probe = new Redis({
    path: socket,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  // Refused until the server listens: each refusal is the connect() promise's, not an event's.
  probe.on('error', () => undefined);
  await waitFor(
    () =>
      probe.connect().then(
        () => true,
        () => false,
      ),
    'redis-server to accept connections',
  );
  probe.disconnect();
  return socket;
}

/** An ioredis client of a TCP port or a unix socket (connect it yourself), disconnected at release. */
export function client(resources: Resources, options: { port: number } | { path: string }): Redis {
  const made = new Redis({ ...options, lazyConnect: true, maxRetriesPerRequest: 0 });
  resources.add(() => made.disconnect());
  return made;
}

/** A command's answer as text: its value, or its error's message. */
export async function answerOf(connection: Redis, command: readonly string[]): Promise<unknown> {
  try {
    return await connection.call(command[0]!, ...command.slice(1));
  } catch (error) {
    return `error: ${error instanceof Error ? error.message : String(error)}`;
  }
}

/**
 * Sends `bytes` to the RESP port on a fresh connection (from `localAddress`, another loopback
 * address, when given); resolves everything answered until the server closes.
 */
export function exchange(port: number, bytes: string, localAddress?: string): Promise<string> {
  return new Promise<string>((resolve) => {
    const socket = netConnect({
      host: '127.0.0.1',
      port,
      ...(localAddress === undefined ? {} : { localAddress }),
    });
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(text));
    socket.write(bytes);
  });
}
