import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FakeServer } from '@dstore/protocol/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { listenMute } from './helpers/listen.js';

const cliPath = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');

const children = new Set<ChildProcess>();
const servers: FakeServer[] = [];
const httpServers: Server[] = [];

afterEach(async () => {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
  await Promise.all(servers.splice(0).map((server) => server.stop()));
  await Promise.all(
    httpServers.splice(0).map((server) => new Promise((resolve) => server.close(() => resolve(undefined)))),
  );
});

interface Run {
  readonly stdout: string;
  /** The bytes of stdout as written. */
  readonly stdoutBytes: Buffer;
  readonly stderr: string;
  readonly code: number | null;
}

/** Runs the built CLI asynchronously: the fake server it talks to lives in this process. */
function dstore(...args: string[]): Promise<Run> {
  return dstoreWith({}, ...args);
}

/** {@link dstore} with bytes on stdin and/or a callback run once the child printed something. */
function dstoreWith(
  io: { readonly stdin?: Uint8Array; readonly onOutput?: (child: ChildProcess, stdout: string) => void },
  ...args: string[]
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], {
      stdio: [io.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    if (io.stdin !== undefined) child.stdin?.end(io.stdin);
    if (io.onOutput) child.stdout?.on('data', () => io.onOutput?.(child, stdout));
    children.add(child);
    let stdout = '';
    let stderr = '';
    const chunks: Buffer[] = [];
    const text = new TextDecoder();
    child.stdout?.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      stdout += text.decode(chunk, { stream: true });
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ stdout, stdoutBytes: Buffer.concat(chunks), stderr, code });
    });
  });
}

/** Bytes as hex, to compare large values as one string. */
function hex(bytes: Uint8Array | undefined): string | undefined {
  return bytes === undefined
    ? undefined
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

async function startServer(): Promise<FakeServer> {
  const server = new FakeServer();
  servers.push(server);
  await server.start();
  return server;
}

async function closedPort(): Promise<string> {
  const server = await startServer();
  const address = server.address;
  await server.stop();
  return address;
}

describe('dstore set/get/del/ping', () => {
  it('writes, reads and deletes a key', async () => {
    const server = await startServer();
    const at = ['--server', server.address];
    expect(await dstore('set', 'greeting', 'hello world', ...at)).toMatchObject({ code: 0, stdout: 'OK\n' });
    expect(await dstore('get', 'greeting', ...at)).toMatchObject({ code: 0, stdout: 'hello world\n' });
    expect(await dstore('del', 'greeting', ...at)).toMatchObject({ code: 0, stdout: '1\n' });
    expect(await dstore('del', 'greeting', ...at)).toMatchObject({ code: 0, stdout: '0\n' });
    expect(await dstore('get', 'greeting', ...at)).toMatchObject({ code: 3, stdout: '(nil)\n', stderr: '' });
  });

  it('prints JSON with --json', async () => {
    const server = await startServer();
    const at = ['--server', server.address, '--json'];
    expect(JSON.parse((await dstore('set', 'k', 'v', ...at)).stdout)).toEqual({ ok: true });
    expect(JSON.parse((await dstore('get', 'k', ...at)).stdout)).toEqual({ key: 'k', value: 'v' });
    expect(JSON.parse((await dstore('get', 'nope', ...at)).stdout)).toEqual({ key: 'nope', value: null });
    expect(JSON.parse((await dstore('del', 'k', ...at)).stdout)).toEqual({ key: 'k', deleted: 1 });
    const ping = JSON.parse((await dstore('ping', ...at)).stdout) as { reply: string; ms: number };
    expect(ping.reply).toBe('PONG');
    expect(typeof ping.ms).toBe('number');
  });

  it('pings with the round-trip time', async () => {
    const server = await startServer();
    const run = await dstore('ping', '--server', `dstore://${server.address}`);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^PONG \d+\.\d{3} ms\n$/);
  });

  it('reports an unreachable server as error UNAVAILABLE with exit code 1', async () => {
    const run = await dstore('get', 'k', '--server', await closedPort());
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^error UNAVAILABLE: cannot connect to 127\.0\.0\.1:\d+/);
  });

  it('says what is on a port that speaks another protocol (the admin port), at once', async () => {
    const server = createServer((_request, response) => response.end('{}'));
    httpServers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const run = await dstore('get', 'k', '--server', address);
    expect(run.code).toBe(1);
    // Not "stopped reconnecting (retryStrategy returned null)": the reason the connection ended.
    expect(run.stderr).toBe(
      `error UNAVAILABLE: cannot connect to ${address}: the peer answered "HTTP": this looks like an HTTP server, not a dstore one (is this the admin port?)\n`,
    );
  });

  it('takes a comma-separated --server list: uses the first, skips an unreachable one', async () => {
    const first = await startServer();
    const second = await startServer();
    expect(await dstore('set', 'k', 'v', '--server', `${first.address},${second.address}`)).toMatchObject({
      code: 0,
      stdout: 'OK\n',
    });
    expect(first.store.has('k')).toBe(true);
    expect(second.store.has('k')).toBe(false);
    const unreachable = await closedPort();
    const run = await dstore('set', 'k2', 'v2', '--server', `dstore://${unreachable},${second.address}`);
    expect(run).toMatchObject({ code: 0, stdout: 'OK\n' });
    expect(second.store.has('k2')).toBe(true);
    // A hung first balancer (accepts, never answers) takes its share of --timeout, not all of it.
    const hung = await listenMute();
    try {
      const past = await dstore(
        'get',
        'k',
        '--timeout',
        '4s',
        '--server',
        `${hung.address},${first.address}`,
      );
      expect(past).toMatchObject({ code: 0, stdout: 'v\n' });
    } finally {
      await hung.close();
    }
    const none = await dstore('get', 'k', '--server', `${unreachable},${await closedPort()}`);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^error UNAVAILABLE: cannot connect to 127\.0\.0\.1:\d+/);
    const empty = await dstore('get', 'k', '--server', `${second.address},,${first.address}`);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/^error INVALID_ARGUMENT: --server: empty address/);
  });

  it('stops quietly, exit 0, when its reader closes the pipe early (dstore mget ... | head)', async () => {
    const server = await startServer();
    const keys = Array.from({ length: 2000 }, (_, i) => `k${i}`);
    for (const key of keys) server.store.set(key, new Uint8Array(1024).fill(120));
    // Two MiB of output: far past what the pipe holds, so the writes after the close fail (EPIPE).
    const run = await dstoreWith(
      { onOutput: (child) => child.stdout?.destroy() },
      'mget',
      ...keys,
      '--server',
      server.address,
    );
    expect(run).toMatchObject({ code: 0, stderr: '' });
  });

  it('reports bad arguments with exit code 2 and shows help with exit code 0', async () => {
    expect((await dstore('get')).code).toBe(2);
    expect((await dstore('bench', '--read-ratio', '2')).code).toBe(2);
    // EXPIRE conditions Redis refuses together: a usage error, nothing sent.
    const conditions = await dstore('expire', 'k', '5', '--nx', '--xx', '--server', await closedPort());
    expect(conditions.code).toBe(2);
    expect(conditions.stderr).toMatch(/--nx and --xx cannot be used together/);
    expect((await dstore('get', 'k', '--server', 'host:99999')).stderr).toMatch(/^error INVALID_ARGUMENT/);
    const help = await dstore('--help');
    expect(help.code).toBe(0);
    for (const command of ['set', 'get', 'del', 'ping', 'status', 'bench'])
      expect(help.stdout).toContain(command);
  });
});

describe('dstore values from stdin and files, mget and mset', () => {
  it('set KEY - reads the value from stdin, --file from a file (values past the argument limit)', async () => {
    const server = await startServer();
    const at = ['--server', server.address];
    const big = new Uint8Array(300 * 1024).map((_, i) => 97 + (i % 26));
    expect(await dstoreWith({ stdin: big }, 'set', 'big', '-', ...at)).toMatchObject({
      code: 0,
      stdout: 'OK\n',
    });
    // As hex: toEqual compares the 300 KB element by element (about a second of CPU).
    expect(hex(server.store.get('big'))).toBe(hex(big));
    const dir = mkdtempSync(join(tmpdir(), 'dstore-cli-'));
    try {
      const file = join(dir, 'value.bin');
      writeFileSync(file, Uint8Array.from([0, 255, 1, 254]));
      expect(await dstore('set', 'bin', '--file', file, ...at)).toMatchObject({ code: 0 });
      expect(server.store.get('bin')).toEqual(Uint8Array.from([0, 255, 1, 254]));
      // get --raw gives the bytes back as they are (no decoding, no newline); a missing key: nothing, exit 3.
      const raw = await dstore('get', 'bin', '--raw', ...at);
      expect(raw.code).toBe(0);
      expect([...raw.stdoutBytes]).toEqual([0, 255, 1, 254]);
      const rawBig = await dstore('get', 'big', '--raw', ...at);
      expect(Buffer.compare(rawBig.stdoutBytes, Buffer.from(big))).toBe(0);
      expect(await dstore('get', 'nothing-here', '--raw', ...at)).toMatchObject({ code: 3, stdout: '' });
      expect((await dstore('get', 'bin', '--raw', '--json', ...at)).code).toBe(2);
      expect((await dstore('set', 'x', 'v', '--file', file, ...at)).code).toBe(2);
      expect((await dstore('set', 'x', '--file', join(dir, 'missing'), ...at)).code).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect((await dstore('set', 'x', ...at)).code).toBe(2);
  });

  it('mset KEY VALUE ... and mget KEY ...', async () => {
    const server = await startServer();
    const at = ['--server', server.address];
    expect(await dstore('mset', 'a', '1', 'b', '2', ...at)).toMatchObject({ code: 0, stdout: 'OK\n' });
    expect(await dstore('mget', 'a', 'nope', 'b', ...at)).toMatchObject({ code: 0, stdout: '1\n(nil)\n2\n' });
    expect(JSON.parse((await dstore('mget', 'a', 'nope', ...at, '--json')).stdout)).toEqual({
      values: { a: '1', nope: null },
    });
    expect((await dstore('mset', 'a', '1', 'b', ...at)).code).toBe(2);
  });

  it('--version, and the shared parsers: bad numbers are usage errors (exit 2)', async () => {
    const version = await dstore('--version');
    expect(version.code).toBe(0);
    expect(version.stdout).toMatch(/^\d+\.\d+\.\d+/);
    const server = await startServer();
    expect((await dstore('ping', '--server', server.address, '--timeout', '1e3')).code).toBe(2);
    expect((await dstore('ping', '--server', server.address, '--timeout', '2s')).code).toBe(0);
    expect((await dstore('ping', '--server', 'h:1e3')).code).toBe(2);
  });
});

describe('dstore bench', () => {
  it('runs a small mix and prints one JSON report with node latency from STATS', async () => {
    const server = await startServer();
    server.stats = {
      'node.node-1.latency.p50_us': 30,
      'node.node-1.latency.p99_us': 80,
      'node.node-1.keys': 25,
      'node.node-2.status': 'down',
    };
    const run = await dstore(
      'bench',
      '--server',
      server.address,
      '--ops',
      '400',
      '--concurrency',
      '8',
      '--keyspace',
      '50',
      '--distribution',
      'zipfian',
      '--clients',
      '2',
      '--json',
    );
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as {
      ops: number;
      errors: Record<string, number>;
      preloaded: number;
      latency: { count: number; p99Us: number };
      byOp: { get: { ops: number }; set: { ops: number } };
      misses: number;
      nodes: { id: string; status: string; latency?: { p50Us: number } }[];
    };
    expect(report.ops).toBe(400);
    expect(report.errors).toEqual({});
    expect(report.preloaded).toBe(50);
    expect(report.misses).toBe(0);
    expect(report.latency.count).toBe(400);
    expect(report.latency.p99Us).toBeGreaterThan(0);
    expect(report.byOp.get.ops + report.byOp.set.ops).toBe(400);
    expect(report.nodes).toMatchObject([
      { id: 'node-1', status: 'up', latency: { p50Us: 30 } },
      { id: 'node-2', status: 'down' },
    ]);
    expect(server.connectionCount).toBe(0);
  });

  it('takes --routing: direct against a balancer without cluster maps routes everything through it', async () => {
    expect((await dstore('bench', '--routing', 'sideways')).code).toBe(2);
    const server = await startServer();
    const run = await dstore(
      'bench',
      '--server',
      server.address,
      '--ops',
      '200',
      '--concurrency',
      '4',
      '--keyspace',
      '20',
      '--routing',
      'direct',
      '--json',
    );
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as {
      ops: number;
      errors: Record<string, number>;
      config: { routing: string };
      routing: { direct: number; viaBalancer: number; redirects: number };
    };
    expect(report.ops).toBe(200);
    expect(report.errors).toEqual({});
    expect(report.config.routing).toBe('direct');
    // The fake balancer predates CLUSTER_MAP (UNKNOWN_OP): no map, so the balancer route serves all.
    expect(report.routing).toEqual({ direct: 0, viaBalancer: 200, redirects: 0 });
  });

  it('prints a readable report', async () => {
    const server = await startServer();
    server.stats = { 'node.n1.latency.p50_us': 30, 'node.n1.latency.p99_us': 80 };
    const run = await dstore(
      'bench',
      '--server',
      server.address,
      '--ops',
      '200',
      '--concurrency',
      '4',
      '--keyspace',
      '20',
    );
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/throughput\s+\d+ ops\/s/);
    expect(run.stdout).toMatch(/^all\s+200\s/m);
    expect(run.stdout).toMatch(/errors\s+none/);
    expect(run.stdout).toMatch(/^n1\s+up/m);
    expect([...server.store.keys()].filter((key) => key.startsWith('bench:'))).toHaveLength(20);

    // --cleanup deletes the keyspace, and nothing else.
    server.store.set('other', new Uint8Array([1]));
    const clean = await dstore(
      'bench',
      '--server',
      server.address,
      '--ops',
      '100',
      '--keyspace',
      '30',
      '--cleanup',
    );
    expect(clean.code).toBe(0);
    expect(clean.stdout).toMatch(/^cleanup\s+30 keys deleted$/m);
    expect([...server.store.keys()].sort()).toEqual(['other']);
  });
});

describe('dstore status', () => {
  async function startAdmin(
    healthy = false,
    replication?: Record<string, unknown>,
    extra: Record<string, unknown> = {},
    degraded = !healthy,
  ): Promise<string> {
    const ring = {
      ...extra,
      ...(replication === undefined ? {} : { replication }),
      epoch: 4,
      map: {
        epoch: 4,
        cluster: 'c0ffee',
        store: 'file',
        location: '/var/lib/dstore/cluster-map.json',
        coordinator: 'bal-1',
        ringEpoch: 3,
        transition: { phase: 'stream', reason: '+node-2', streamsDone: 1, keysMoved: 42 },
        removed: [{ id: 'node-0', identity: 'abc' }],
      },
      algorithm: 'vnode',
      hashTag: '{}',
      nodes: [
        {
          id: 'node-1',
          address: '127.0.0.1:7401',
          status: 'up',
          weight: 1,
          share: 0.3333,
          keys: 120,
          state: 'up',
          identity: '0123456789abcdef',
          storage: degraded
            ? {
                state: 'degraded',
                reason: 'out of space: the map-size limit of 2097152 bytes is reached',
                usedBytes: 2 * 2 ** 20,
                availableBytes: 512,
              }
            : { state: 'ok', reason: '', usedBytes: 2 ** 20, availableBytes: 2 ** 20 },
        },
        {
          id: 'node-2',
          address: '127.0.0.1:7402',
          status: 'down',
          weight: 2,
          share: 0.6667,
          keys: 240,
          ...(replication === undefined ? {} : { replicaState: 'failed' }),
        },
      ],
    };
    const health = healthy
      ? { status: 'ok', ready: true, nodes: 2, nodesUp: 2 }
      : { status: 'ok', ready: false, nodes: 2, nodesUp: 1 };
    const server = createServer((request, response) => {
      const body = request.url === '/ring' ? ring : request.url === '/health' ? health : undefined;
      response.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
      response.end(JSON.stringify(body ?? { error: 'not found' }));
    });
    httpServers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  it('prints the epoch and one row per node; exits 1 when a node is down', async () => {
    const admin = await startAdmin();
    const run = await dstore('status', '--admin', admin);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('NOT HEALTHY');
    expect(run.stdout).toMatch(
      /epoch 4 {2}algorithm vnode {2}hash tag \{\} {2}health ok {2}ready no {2}nodes up 1\/2/,
    );
    expect(run.stdout).toMatch(/node-1\s+127\.0\.0\.1:7401\s+up\s+up\s+-\s+1\s+33\.3%\s+120\s+0123456789ab/);
    expect(run.stdout).toMatch(/node-2\s+127\.0\.0\.1:7402\s+down\s+-\s+-\s+2\s+66\.7%\s+240\s+-/);
    expect(run.stdout).toContain(
      'map epoch 4  ring epoch 3  store file (/var/lib/dstore/cluster-map.json)  coordinator bal-1',
    );
    expect(run.stdout).toContain('transition stream: +node-2  streams done 1  keys moved 42');
    expect(run.stdout).toContain('removed: node-0');
    expect(run.stdout).toMatch(/0123456789ab\s+degraded\s+2\.0 MiB\s+512 B/);
    expect(run.stdout).toContain(
      'node-1 degraded: out of space: the map-size limit of 2097152 bytes is reached',
    );
  });

  it('lists the JOINs the balancer refused; a refused node is not healthy', async () => {
    const refusal = {
      node: 'node-7',
      address: '127.0.0.1:7407',
      code: 'CLUSTER_MISMATCH',
      message: "node 'node-7' holds data of another cluster",
      count: 3,
      lastAt: '2026-12-06T06:00:00.000Z',
    };
    const admin = await startAdmin(true, undefined, { refusedJoins: [refusal] });
    const run = await dstore('status', '--admin', admin);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain(
      "refused node-7 (127.0.0.1:7407) CLUSTER_MISMATCH x3: node 'node-7' holds data of another cluster",
    );
    expect(run.stdout).toContain('NOT HEALTHY: 1 refused node (see above)');
  });

  it('prints the replication factor, member states and under-replicated ranges; those are not healthy', async () => {
    const chain = {
      desired: ['node-1', 'node-2'],
      serving: ['node-1'],
      underReplicated: true,
      ranges: 2,
      share: 1,
    };
    const under = await dstore(
      'status',
      '--admin',
      await startAdmin(true, { factor: 2, active: false, underReplicatedRanges: 2, chains: [chain] }),
    );
    expect(under.code).toBe(1);
    expect(under.stdout).toContain(
      'replication factor 2 (not replicating yet: every key has ONE copy)  under-replicated ranges 2  chains 1',
    );
    expect(under.stdout).toMatch(/node-2\s+127\.0\.0\.1:7402\s+down\s+-\s+failed\s+2/);
    expect(under.stdout).toContain('NOT HEALTHY: 2 under-replicated ranges');
    const replicating = await dstore(
      'status',
      '--admin',
      await startAdmin(true, { factor: 3, active: true, underReplicatedRanges: 0, chains: [chain] }),
    );
    expect(replicating.stdout).toContain(
      'replication factor 3 (chain replication)  under-replicated ranges 0  chains 1',
    );
    // A returning member catching up: its progress, and its ranges still count as under-replicated.
    const sync = {
      node: 'node-2',
      phase: 'syncing',
      keysStreamed: 1200,
      keysPerSecond: 400,
      bytesStreamed: 3 * 1024 * 1024,
      bytesPerSecond: 1024 * 1024,
      rangesLeft: 3,
      rangesTotal: 8,
      rangesUnchanged: 4,
    };
    const syncing = await dstore(
      'status',
      '--admin',
      await startAdmin(true, { factor: 3, active: true, underReplicatedRanges: 2, chains: [chain], sync }),
    );
    expect(syncing.code).toBe(1);
    expect(syncing.stdout).toContain(
      'syncing node-2: 1200 keys, 3.0 MiB streamed (400 keys/s, 1.0 MiB/s), 3 of 8 ranges left, 4 unchanged (not copied)',
    );
    const single = { desired: ['node-1'], serving: ['node-1'], underReplicated: false, ranges: 1, share: 1 };
    const one = await dstore(
      'status',
      '--admin',
      await startAdmin(true, { factor: 1, active: false, underReplicatedRanges: 0, chains: [single] }),
    );
    expect(one.code).toBe(0);
    expect(one.stdout).toContain('replication factor 1  under-replicated ranges 0  chains 1');
  });

  it('says so when the ring has no nodes', async () => {
    const server = createServer((request, response) => {
      const body =
        request.url === '/ring'
          ? { epoch: 0, algorithm: 'vnode', nodes: [] }
          : { status: 'ok', ready: false, nodes: 0, nodesUp: 0 };
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(body));
    });
    httpServers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const run = await dstore('status', '--admin', `127.0.0.1:${(server.address() as AddressInfo).port}`);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('NOT HEALTHY: the ring has no nodes');
  });

  it('exits 0 when every node is up', async () => {
    const run = await dstore('status', '--admin', await startAdmin(true));
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('healthy');
  });

  it('exits 1 when every node is up but one refuses writes (its storage is full)', async () => {
    const run = await dstore('status', '--admin', await startAdmin(true, undefined, {}, true));
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('node-1 degraded: out of space');
    expect(run.stdout).toContain('NOT HEALTHY: 1 node refuses writes (storage degraded, see above)');
  });

  it('--watch prints the status again until interrupted, then exits with the last status', async () => {
    const admin = await startAdmin();
    let interrupted = false;
    const run = await dstoreWith(
      {
        onOutput: (child, stdout) => {
          if (!interrupted && (stdout.match(/^epoch 4/gm) ?? []).length >= 2) {
            interrupted = true;
            child.kill('SIGINT');
          }
        },
      },
      'status',
      '--admin',
      admin,
      '--watch',
      '50ms',
    );
    expect((run.stdout.match(/^epoch 4/gm) ?? []).length).toBeGreaterThanOrEqual(2);
    expect(run.code).toBe(1);
  });

  it('prints {ring, health} with --json', async () => {
    const admin = await startAdmin();
    const run = await dstore('status', '--admin', admin, '--json');
    const parsed = JSON.parse(run.stdout) as {
      ring: { epoch: number; nodes: unknown[] };
      health: { nodesUp: number };
    };
    expect(parsed.ring.epoch).toBe(4);
    expect(parsed.ring.nodes).toHaveLength(2);
    expect(parsed.health.nodesUp).toBe(1);
  });

  it('reports an unreachable admin port as error UNAVAILABLE', async () => {
    const run = await dstore('status', '--admin', await closedPort());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error UNAVAILABLE: cannot fetch http:\/\/127\.0\.0\.1:\d+\/(ring|health)/);
  });
});

describe('dstore status with a migration', () => {
  function adminWith(migration: Record<string, unknown>): Promise<string> {
    const nodes = [{ id: 'node-1', address: '127.0.0.1:7401', status: 'up', weight: 1, share: 1, keys: 10 }];
    return adminServing({ epoch: 7, algorithm: 'vnode', nodes, migration });
  }

  /** An admin port answering `/ring` with `ring` and `/health` with every node up. */
  async function adminServing(ring: {
    readonly nodes: readonly unknown[];
    readonly [field: string]: unknown;
  }): Promise<string> {
    const health = { status: 'ok', ready: true, nodes: ring.nodes.length, nodesUp: ring.nodes.length };
    const server = createServer((request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(request.url === '/ring' ? ring : health));
    });
    httpServers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  it('says a stalled migration is not healthy, with its cause, and exits 1', async () => {
    const admin = await adminWith({
      active: true,
      epoch: 7,
      pendingRanges: 4,
      totalRanges: 16,
      keysMoved: 12,
      keysPerSecond: 3,
      queuedChanges: 0,
      stalled: { from: 'node-1', to: 'node-4', code: 'OUT_OF_SPACE', message: 'disk full', attempts: 21 },
    });
    const run = await dstore('status', '--admin', admin);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain(
      'migration STALLED: node-1 -> node-4 refused 21 times: OUT_OF_SPACE disk full',
    );
    expect(run.stdout).toContain('NOT HEALTHY: a migration is stalled');
  });

  it("prints '-' for the key count of a node whose heartbeats go to another balancer", async () => {
    const ring = {
      epoch: 3,
      algorithm: 'vnode',
      nodes: [
        { id: 'node-1', address: '127.0.0.1:7401', status: 'up', weight: 1, share: 0.5, keys: 0 },
        {
          id: 'node-2',
          address: '127.0.0.1:7402',
          status: 'up',
          weight: 1,
          share: 0.5,
          keys: 0,
          storage: { state: 'ok', reason: '', usedBytes: 1024, availableBytes: 4096 },
        },
      ],
    };
    const run = await dstore('status', '--admin', await adminServing(ring));
    expect(run.stdout).toMatch(/^node-1 +127\.0\.0\.1:7401 +up +- +- +1 +50\.0% +- +- +- +- +-$/m);
    expect(run.stdout).toMatch(
      /^node-2 +127\.0\.0\.1:7402 +up +- +- +1 +50\.0% +0 +- +ok +1\.0 KiB +4\.0 KiB$/m,
    );
  });

  it('prints the migration progress line', async () => {
    const admin = await adminWith({
      active: true,
      epoch: 7,
      pendingRanges: 40,
      totalRanges: 160,
      keysMoved: 1234,
      keysPerSecond: 5000,
      queuedChanges: 1,
    });
    const run = await dstore('status', '--admin', admin);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      /migration running \(epoch 7\) {2}pending ranges 40\/160 {2}keys moved 1234 {2}5000 keys\/s {2}queued changes 1/,
    );
  });
});

describe('dstore node remove', () => {
  it('POSTs /nodes/<id>/remove and waits until the node left /ring', async () => {
    const posts: string[] = [];
    let polls = 0;
    const server = createServer((request, response) => {
      if (request.method === 'POST') {
        posts.push(request.url ?? '');
        response.writeHead(request.url === '/nodes/node-2/remove' ? 202 : 404, {
          'content-type': 'application/json',
        });
        response.end('{}');
        return;
      }
      polls++;
      const nodes = [{ id: 'node-1', address: 'a', status: 'up', weight: 1, share: 1 }];
      if (polls < 3) nodes.push({ id: 'node-2', address: 'b', status: 'up', weight: 1, share: 0 });
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ epoch: 9, nodes, migration: { keysMoved: 42 } }));
    });
    httpServers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const admin = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const run = await dstore('node', 'remove', 'node-2', '--admin', admin);
    expect(run.code).toBe(0);
    expect(posts).toEqual(['/nodes/node-2/remove']);
    expect(run.stdout).toMatch(/node node-2 removed at epoch 9 \(42 keys moved/);
    const missing = await dstore('node', 'remove', 'nope', '--admin', admin);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/no node 'nope'/);
  });

  it('times out naming the stalled migration its removal waits behind', async () => {
    const server = createServer((request, response) => {
      response.writeHead(request.method === 'POST' ? 202 : 200, { 'content-type': 'application/json' });
      if (request.method === 'POST') {
        response.end('{}');
        return;
      }
      const nodes = [
        { id: 'node-1', address: 'a', status: 'up', weight: 1, share: 0.5 },
        { id: 'node-4', address: 'b', status: 'up', weight: 1, share: 0.5 },
      ];
      const stalled = {
        from: 'node-1',
        to: 'node-4',
        code: 'OUT_OF_MEMORY',
        message: 'cap reached',
        attempts: 9,
      };
      response.end(
        JSON.stringify({ epoch: 12, nodes, migration: { keysMoved: 0, queuedChanges: 1, stalled } }),
      );
    });
    httpServers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const admin = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    // --timeout bounds the POST too: long enough for it on a loaded machine.
    const run = await dstore('node', 'remove', 'node-4', '--admin', admin, '--timeout', '2000');
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(
      'node node-4 still in the ring after 2000 ms: its removal waits behind a stalled migration (node-1 -> node-4 refused 9 times: OUT_OF_MEMORY cap reached)',
    );
  });

  it('--dead POSTs /nodes/<id>/remove?dead and reports a refusal', async () => {
    const posts: string[] = [];
    const server = createServer((request, response) => {
      if (request.method === 'POST') {
        posts.push(request.url ?? '');
        const dead = request.url === '/nodes/node-3/remove?dead';
        response.writeHead(dead ? 202 : 400, { 'content-type': 'application/json' });
        response.end(dead ? '{}' : JSON.stringify({ error: 'node node-1 is up, not failed' }));
        return;
      }
      const nodes = [{ id: 'node-1', address: 'a', status: 'up', weight: 1, share: 1 }];
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ epoch: 12, nodes, migration: { keysMoved: 0 } }));
    });
    httpServers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const admin = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const run = await dstore('node', 'remove', '--dead', 'node-3', '--admin', admin);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/node node-3 removed at epoch 12/);
    const refused = await dstore('node', 'remove', '--dead', 'node-1', '--admin', admin);
    // Refused by the cluster's state, not a usage error: exit 1.
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/remove refused: node node-1 is up, not failed/);
    expect(posts).toEqual(['/nodes/node-3/remove?dead', '/nodes/node-1/remove?dead']);
  });
});
