/**
 * Memory per key of the memory engine, and against Redis on the same data in the same run.
 *
 *   pnpm --filter @dstore/storage-node build
 *   cd packages/storage-node && node --expose-gc --import tsx bench/engine-memory.ts [keys] [value sizes]
 *   # defaults: 1000000 keys, value sizes 100 (e.g. `... 1000000 16,100,1000`)
 *
 * 1. In process: the engine's footprint (what `--max-memory` bounds) against the V8 heap + external
 *    growth after a full GC, for 16-byte keys ("key:" + 12 digits) and each value size: how exact
 *    the accounting is.
 * 2. Real processes, same keys and values: a `dstore-node` (the built CLI, memory engine) loaded
 *    with MSETs, and a `redis-server` loaded with pipelined SETs; RSS growth (/proc VmRSS) per key
 *    and per stored byte (key + value), measured from each server warmed up by the same kind of
 *    traffic with nothing stored, plus Redis's own `used_memory` growth. Redis is skipped, with a
 *    message, when `redis-server` is not installed (Debian: `apt-get install -y redis-server`).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Connection, connectSocket, handshake, Op } from '@dstore/protocol';
import { MemoryEngine } from '../src/engines/index.js';

const KEYS = Number(process.argv[2] ?? 1_000_000);
const VALUE_SIZES = (process.argv[3] ?? '100').split(',').map(Number);
const KEY_BYTES = 16;
const WARM_KEYS = 20_000;
const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../dist/cli.js');

function collect(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc');
  for (let i = 0; i < 3; i++) gc();
}

async function settle(): Promise<void> {
  // Array buffers of collected objects are freed by a sweeper after the collection.
  for (let i = 0; i < 3; i++) {
    collect();
    await new Promise((resolveLater) => setTimeout(resolveLater, 50));
  }
}

function heapAndExternal(): number {
  const usage = process.memoryUsage();
  // arrayBuffers is a subset of external; count external once.
  return usage.heapUsed + usage.external;
}

/** 16-byte key "key:" + 12 zero-padded decimal digits, like redis-benchmark's key:__rand_int__. */
function keyText(i: number): string {
  return `key:${String(i).padStart(KEY_BYTES - 4, '0')}`;
}

function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) * 1024 : Number.NaN;
}

async function inProcess(valueBytes: number): Promise<{ measured: number; counted: number }> {
  await settle();
  const before = heapAndExternal();
  const engine = new MemoryEngine();
  const value = new Uint8Array(valueBytes).fill(0x78);
  const key = new Uint8Array(KEY_BYTES);
  for (let i = 0; i < KEYS; i++) {
    const text = keyText(i);
    for (let j = 0; j < KEY_BYTES; j++) key[j] = text.charCodeAt(j);
    await engine.set(key, value);
  }
  await settle();
  const measured = (heapAndExternal() - before) / KEYS;
  const counted = engine.footprint() / KEYS;
  await engine.close();
  return { measured, counted };
}

async function waitForLine(child: ChildProcess): Promise<number> {
  return new Promise<number>((resolvePort, reject) => {
    let stdout = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      stdout += chunk;
      const newline = stdout.indexOf('\n');
      if (newline >= 0) resolvePort((JSON.parse(stdout.slice(0, newline)) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)));
  });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolveExit) => child.once('exit', resolveExit));
  child.kill('SIGKILL');
  await exited;
}

/** RSS growth per key of a dstore-node loaded with KEYS keys of `valueBytes`. */
async function dstoreRss(valueBytes: number): Promise<number> {
  const child = spawn(process.execPath, [CLI, '--port', '0', '--log-level', 'warn'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const port = await waitForLine(child);
    const connection = new Connection(await connectSocket({ host: '127.0.0.1', port }), {
      maxInFlight: 4096,
      requestTimeoutMs: 60_000,
    });
    await handshake(connection, 'client');
    const value = new Uint8Array(valueBytes).fill(0x78);
    const load = async (count: number, op: 'set' | 'del'): Promise<void> => {
      const pending: Promise<unknown>[] = [];
      for (let offset = 0; offset < count; offset += 500) {
        const keys = Array.from({ length: Math.min(500, count - offset) }, (_, j) =>
          Buffer.from(keyText(offset + j), 'latin1'),
        );
        pending.push(
          op === 'set'
            ? connection.request({ op: Op.MSET, entries: keys.map((key) => ({ key, value })) })
            : Promise.all(keys.map((key) => connection.request({ op: Op.DEL, key }))),
        );
        if (pending.length >= 8) await Promise.all(pending.splice(0));
      }
      await Promise.all(pending);
    };
    await load(WARM_KEYS, 'set');
    await load(WARM_KEYS, 'del');
    const before = rssBytes(child.pid as number);
    await load(KEYS, 'set');
    const after = rssBytes(child.pid as number);
    connection.destroy();
    return (after - before) / KEYS;
  } finally {
    await stop(child);
  }
}

/** Just enough RESP for a pipelined load and INFO: replies are counted, not parsed. */
class Resp {
  private received = Buffer.alloc(0);
  private waiting: (() => void) | undefined;

  constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      this.waiting?.();
    });
  }

  /** Sends `commands` and waits until `replyBytes` bytes of replies arrived. */
  async pipeline(commands: Buffer, replyBytes: number): Promise<void> {
    this.socket.write(commands);
    while (this.received.length < replyBytes) {
      await new Promise<void>((wake) => {
        this.waiting = wake;
      });
    }
    this.received = this.received.subarray(replyBytes);
  }

  async usedMemory(): Promise<number> {
    this.socket.write('INFO memory\r\n');
    for (;;) {
      const text = this.received.toString('latin1');
      const header = /^\$(\d+)\r\n/.exec(text);
      if (header && text.length >= header[0].length + Number(header[1]) + 2) {
        this.received = Buffer.alloc(0);
        return Number(/used_memory:(\d+)/.exec(text)?.[1]);
      }
      await new Promise<void>((wake) => {
        this.waiting = wake;
      });
    }
  }
}

function redisInstalled(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

async function redisRss(valueBytes: number): Promise<{ rss: number; used: number; version: string }> {
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const version = /v=([\d.]+)/.exec(spawnSync('redis-server', ['--version']).stdout.toString())?.[1] ?? '?';
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  try {
    let socket: Socket | undefined;
    for (let attempt = 0; socket === undefined; attempt++) {
      try {
        socket = await new Promise<Socket>((resolveSocket, reject) => {
          const candidate = createConnection({ host: '127.0.0.1', port }, () => resolveSocket(candidate));
          candidate.once('error', reject);
        });
      } catch (error) {
        if (attempt > 100) throw error;
        await new Promise((resolveLater) => setTimeout(resolveLater, 50));
      }
    }
    const resp = new Resp(socket);
    const value = 'x'.repeat(valueBytes);
    const load = async (count: number, op: 'set' | 'del'): Promise<void> => {
      for (let offset = 0; offset < count; offset += 1000) {
        const parts: string[] = [];
        const n = Math.min(1000, count - offset);
        for (let j = 0; j < n; j++) {
          const key = keyText(offset + j);
          parts.push(
            op === 'set'
              ? `*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${valueBytes}\r\n${value}\r\n`
              : `*2\r\n$3\r\nDEL\r\n$${key.length}\r\n${key}\r\n`,
          );
        }
        // +OK\r\n per SET, :1\r\n per DEL.
        await resp.pipeline(Buffer.from(parts.join(''), 'latin1'), n * (op === 'set' ? 5 : 4));
      }
    };
    await load(WARM_KEYS, 'set');
    await load(WARM_KEYS, 'del');
    const rssBefore = rssBytes(child.pid as number);
    const usedBefore = await resp.usedMemory();
    await load(KEYS, 'set');
    const rss = (rssBytes(child.pid as number) - rssBefore) / KEYS;
    const used = ((await resp.usedMemory()) - usedBefore) / KEYS;
    socket.destroy();
    return { rss, used, version };
  } finally {
    await stop(child);
  }
}

async function main(): Promise<void> {
  const withRedis = redisInstalled();
  if (!withRedis) {
    console.error('redis-server is not installed (apt-get install -y redis-server): Redis is skipped');
  }
  const lines = [
    `${KEYS.toLocaleString('en-US')} keys of ${KEY_BYTES} bytes; per key, and per stored byte (key + value) in parentheses.`,
    '',
    '| value bytes | dstore footprint (counted) | dstore heap+external (measured) | dstore node RSS | Redis RSS | Redis used_memory |',
    '|---:|---:|---:|---:|---:|---:|',
  ];
  let version = '';
  for (const valueBytes of VALUE_SIZES) {
    const stored = KEY_BYTES + valueBytes;
    const cell = (perKey: number): string => `${perKey.toFixed(1)} (${(perKey / stored).toFixed(2)})`;
    const engine = await inProcess(valueBytes);
    const node = await dstoreRss(valueBytes);
    const redis = withRedis ? await redisRss(valueBytes) : undefined;
    if (redis) version = redis.version;
    lines.push(
      `| ${valueBytes} | ${cell(engine.counted)} | ${cell(engine.measured)} | ${cell(node)} | ${redis ? cell(redis.rss) : 'skipped'} | ${redis ? cell(redis.used) : 'skipped'} |`,
    );
  }
  if (version !== '') lines.push('', `Redis ${version} (jemalloc), no persistence.`);
  console.log(lines.join('\n'));
}

await main();
