import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A throwaway redis-server to ask for Redis's own answers: the golden fixtures dstore's Redis
 * arithmetic is tested against (INCRBYFLOAT, the bit commands) are captured with it by scripts, so
 * tests need no Redis. Listens on a unix socket in a temporary directory (nothing on TCP), saves
 * nothing.
 */
export interface RedisOracle {
  /** The server's `redis_version`. */
  readonly version: string;
  /**
   * Sends the commands as one pipeline (arguments as latin1 bytes) and resolves one answer each:
   * a simple string, an integer or a bulk string as its text (latin1), an error as its line with
   * the leading `-`, a nil bulk as null.
   */
  ask(commands: readonly (readonly string[])[]): Promise<(string | null)[]>;
  /** Kills the server and removes its directory. */
  stop(): void;
}

/** One case of a golden fixture (see {@link captureGolden}). */
export interface GoldenCase {
  /** The value the key `k` holds before the command (latin1), or null: no such key. */
  readonly value: string | null;
  /** The command, naming the key `k`. */
  readonly command: readonly string[];
  /** The fixture's row for this case, from Redis's answer (`-ERR ...` for an error, `nil` for null). */
  row(answer: string): unknown;
}

/**
 * Asks a throwaway redis-server ({@link startRedisOracle}) every case (the key set or deleted, then
 * the command) and writes the fixture at `path`: the Redis version and one row per line, so a rerun
 * against the same Redis writes the same file and a diff shows the rows that changed. Resolves a
 * line saying what was written.
 */
export async function captureGolden(path: string, cases: readonly GoldenCase[]): Promise<string> {
  const redis = await startRedisOracle();
  try {
    const answers = await redis.ask(
      cases.flatMap(({ value, command }) => [value === null ? ['DEL', 'k'] : ['SET', 'k', value], command]),
    );
    const rows = cases.map((one, index) => JSON.stringify(one.row(answers[index * 2 + 1] ?? 'nil')));
    writeFileSync(path, `{"redis": ${JSON.stringify(redis.version)}, "cases": [\n${rows.join(',\n')}\n]}\n`);
    return `${cases.length} cases from Redis ${redis.version} -> ${path}`;
  } finally {
    redis.stop();
  }
}

/** Starts redis-server (from the PATH) and connects to it. */
export async function startRedisOracle(): Promise<RedisOracle> {
  const directory = mkdtempSync(join(tmpdir(), 'dstore-redis-oracle-'));
  const path = join(directory, 'redis.sock');
  const server = spawn(
    'redis-server',
    ['--port', '0', '--unixsocket', path, '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  );
  const stop = (): void => {
    server.kill('SIGKILL');
    rmSync(directory, { recursive: true, force: true });
  };
  try {
    const socket = await connectWhenReady(path);
    const info = await roundTrip(socket, [['INFO', 'server']]);
    const version = /redis_version:(\S+)/.exec(info[0] ?? '')?.[1] ?? 'unknown';
    return {
      version,
      ask: (commands) => roundTrip(socket, commands),
      stop: () => {
        socket.destroy();
        stop();
      },
    };
  } catch (error) {
    stop();
    throw error;
  }
}

async function connectWhenReady(path: string): Promise<Socket> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const socket = createConnection(path);
    const ready = await new Promise<boolean>((resolve) => {
      socket.once('connect', () => resolve(true));
      socket.once('error', () => resolve(false));
    });
    if (ready) return socket;
    socket.destroy();
    await sleep(100);
  }
  throw new Error('redis-server did not start (is it installed? Debian: apt-get install redis-server)');
}

function encode(args: readonly string[]): Buffer {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.from(arg, 'latin1');
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** Reads `count` RESP2 answers (+, -, :, $) off `input`; undefined until all have arrived. */
function parseAnswers(input: Buffer, count: number): (string | null)[] | undefined {
  const out: (string | null)[] = [];
  let at = 0;
  while (out.length < count) {
    const end = input.indexOf('\r\n', at);
    if (end < 0) return undefined;
    const line = input.subarray(at, end).toString('latin1');
    at = end + 2;
    if (line[0] !== '$') {
      out.push(line[0] === '-' ? line : line.slice(1));
      continue;
    }
    const length = Number(line.slice(1));
    if (length < 0) {
      out.push(null);
      continue;
    }
    if (input.length < at + length + 2) return undefined;
    out.push(input.subarray(at, at + length).toString('latin1'));
    at += length + 2;
  }
  return out;
}

function roundTrip(socket: Socket, commands: readonly (readonly string[])[]): Promise<(string | null)[]> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      const answers = parseAnswers(Buffer.concat(chunks), commands.length);
      if (answers === undefined) return;
      socket.off('data', onData);
      socket.off('error', reject);
      resolve(answers);
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(Buffer.concat(commands.map(encode)));
  });
}
