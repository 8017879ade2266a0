import {
  bytesToString,
  Connection,
  connectSocket,
  handshake,
  Op,
  type Response,
  toBytes,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { Resources, sleep } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

const REQUESTS = 3000;

async function pipelinedClient(port: number): Promise<Connection> {
  const socket = await connectSocket({ host: '127.0.0.1', port });
  const connection = new Connection(socket, { maxInFlight: REQUESTS + 10, requestTimeoutMs: 20_000 });
  resources.defer(() => connection.destroy());
  await handshake(connection, 'client');
  return connection;
}

/** Lets the connection's coalesced writes (flushed on setImmediate) reach the socket. */
async function flushed(): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
}

describe('graceful shutdown of the dstore-node CLI', () => {
  it('answers every request sent before SIGTERM, exits 0, and comes back with its data (lmdb)', async () => {
    const dataDir = resources.tempDir();
    const args = [
      '--port',
      '0',
      '--id',
      'graceful-1',
      '--engine',
      'lmdb',
      '--data-dir',
      dataDir,
      '--log-level',
      'warn',
    ];
    const first = await resources.spawnNode(args);
    expect(first.ready).toMatchObject({
      event: 'ready',
      service: 'dstore-node',
      id: 'graceful-1',
      host: '127.0.0.1',
    });
    const client = await pipelinedClient(first.ready.port);

    const answers: Promise<Response>[] = [];
    for (let i = 0; i < REQUESTS; i++) {
      answers.push(client.request({ op: Op.SET, key: toBytes(`key-${i}`), value: toBytes(`value-${i}`) }));
    }
    await flushed();
    first.child.kill('SIGTERM');
    const settled = await Promise.allSettled(answers);
    const failures = settled.filter((result) => result.status === 'rejected');
    expect(failures).toEqual([]);
    expect(await first.exited).toBe(0);

    const second = await resources.spawnNode(args);
    expect(second.ready.id).toBe('graceful-1');
    const reader = await pipelinedClient(second.ready.port);
    const values = await Promise.all(
      Array.from({ length: REQUESTS }, (_, i) => reader.request({ op: Op.GET, key: toBytes(`key-${i}`) })),
    );
    values.forEach((response, i) => {
      expect(response.op).toBe(Op.VALUE);
      const value = (response as Extract<Response, { op: typeof Op.VALUE }>).value;
      expect(value && bytesToString(value)).toBe(`value-${i}`);
    });
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  });

  it('answers in-flight requests on SIGINT with the memory engine and exits 0', async () => {
    const node = await resources.spawnNode(['--port', '0', '--log-level', 'warn']);
    const client = await pipelinedClient(node.ready.port);
    const answers = Array.from({ length: 1000 }, (_, i) =>
      client.request({ op: Op.SET, key: toBytes(`k${i}`), value: toBytes('v') }),
    );
    await flushed();
    node.child.kill('SIGINT');
    const settled = await Promise.allSettled(answers);
    expect(settled.every((result) => result.status === 'fulfilled')).toBe(true);
    expect(await node.exited).toBe(0);
  });

  it('a second signal during the shutdown forces exit 1', async () => {
    const node = await resources.spawnNode([
      '--port',
      '0',
      '--log-level',
      'warn',
      '--drain-timeout',
      '20000',
    ]);
    const client = await pipelinedClient(node.ready.port);
    // Steady traffic keeps the drain from going quiet, so the first SIGTERM is still stopping.
    let sending = true;
    const traffic = (async () => {
      // Stops at the first failure: a closed connection rejects at once, which would spin.
      while (sending) await client.request({ op: Op.PING });
    })().catch(() => undefined);
    await sleep(50);
    node.child.kill('SIGTERM');
    await sleep(200);
    expect(node.child.exitCode).toBeNull();
    node.child.kill('SIGTERM');
    expect(await node.exited).toBe(1);
    sending = false;
    // The PING in flight would otherwise wait for its deadline on the half-closed connection.
    client.destroy();
    await traffic;
  });

  it('refuses invalid options with exit code 2 and a clear message', async () => {
    const { spawn } = await import('node:child_process');
    const { CLI_PATH } = await import('./helpers.js');
    // The CLI runs started together, not one after another: each is a Node.js start (~0.2 s).
    const run = (...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> =>
      new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
        child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
        child.on('error', reject);
        child.on('close', (status) => resolve({ status, stdout, stderr }));
      });
    // The shared parsers: no 1e3 for an integer, units for durations, host:port for --join.
    const bads = [
      ['--port', '1e3'],
      ['--idle-timeout', '5x'],
      ['--join', 'nohost'],
      ['--join', 'h:1,,h:2'],
    ];
    const [lmdb, port, engine, version, help, ...badRuns] = await Promise.all([
      run('--engine', 'lmdb', '--port', '0'),
      run('--port', 'abc'),
      run('--engine', 'rocks'),
      run('--version'),
      run('--help'),
      ...bads.map((bad) => run(...bad)),
    ]);
    expect(lmdb!.status).toBe(2);
    expect(lmdb!.stderr).toMatch(/data directory/);
    expect(port!.status).toBe(2);
    expect(port!.stderr).toMatch(/--port/);
    expect(engine!.status).toBe(2);
    for (const [i, bad] of bads.entries()) expect(badRuns[i]!.status, bad.join(' ')).toBe(2);
    expect(version!.status).toBe(0);
    expect(version!.stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
    expect(help!.status).toBe(0);
    for (const flag of [
      '--host',
      '--port',
      '--id',
      '--engine',
      '--data-dir',
      '--durability',
      '--join',
      '--advertise-host',
      '--weight',
      '--max-connections',
      '--idle-timeout',
      '--token',
      '--heartbeat-interval',
      '--log-level',
    ]) {
      expect(help.stdout).toContain(flag);
    }
  });
});
