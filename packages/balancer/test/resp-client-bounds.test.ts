/**
 * The bounds a RESP connection shares with the native port (pressure audit, F1 point 5): a client
 * pipelining big SETs it never reads the answers of holds at most `--max-client-bytes-in-flight`
 * of them towards the nodes (reading pauses past it, as on the native port); a command that started
 * arriving must be complete within `--frame-timeout` (audit F2), as a native frame.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import { keysOwnedBy, type NodeReady, Resources, type Spawned, waitFor } from './helpers.js';
import { startRespCluster } from './resp-helpers.js';

const resources = new Resources();
let balancer: Balancer;
let port: number;
let nodes: Spawned<NodeReady>[];

/** The byte bound of the cluster under test: eight of the 64 KiB SETs below. */
const BYTES_IN_FLIGHT = 512 * 1024;
const VALUE = 'v'.repeat(64 * 1024);
/** The started-command deadline, shortened for the test (10 s by default). */
const FRAME_TIMEOUT_MS = 1500;

beforeAll(async () => {
  // Long deadlines: a node is SIGSTOPped for a while and must neither time out nor be marked down.
  ({
    balancer,
    respPort: port,
    nodes,
  } = await startRespCluster(resources, 2, {
    maxClientBytesInFlight: BYTES_IN_FLIGHT,
    requestTimeoutMs: 60_000,
    heartbeatTimeoutMs: 60_000,
    frameTimeoutMs: FRAME_TIMEOUT_MS,
  }));
}, 60_000);
afterAll(() => resources.releaseAll());

const command = (...args: string[]): string =>
  `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`;

/**
 * Large writes the balancer has sent node `id` and not had answered: those on its bulk link (the
 * main link also carries the balancer's own probes of the node).
 */
function inFlightAt(id: string): number {
  return balancer.membership.node(id)!.bulkLink.connection?.inFlight ?? 0;
}

/**
 * A raw connection, destroyed at release; what it receives is collected in `received()`, and
 * `ended()` tells whether the server closed it.
 */
async function rawSocket(): Promise<{ socket: Socket; received: () => string; ended: () => boolean }> {
  const socket = netConnect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  resources.add(() => socket.destroy());
  let text = '';
  let ended = false;
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
  });
  socket.once('end', () => {
    ended = true;
  });
  socket.once('close', () => {
    ended = true;
  });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, received: () => text, ended: () => ended };
}

/**
 * Sends `head`, then `piece` every `everyMs` until the server closes the connection (or the test
 * ends): a client that started a command and never finishes it, yet is never idle.
 */
async function trickle(head: string, piece: string, everyMs: number): Promise<{ reply: string }> {
  const raw = await rawSocket();
  raw.socket.write(head);
  const timer = setInterval(() => {
    if (!raw.ended()) raw.socket.write(piece);
  }, everyMs);
  resources.add(() => clearInterval(timer));
  try {
    await waitFor(() => raw.ended(), 'the server to close the trickling connection');
  } finally {
    clearInterval(timer);
  }
  return { reply: raw.received() };
}

describe('bytes of large commands in flight per RESP connection', () => {
  it('a client pipelining big SETs without reading is not read past the bound; another is served meanwhile; then all complete', async () => {
    const stalled = nodes[0]!;
    const id = 'resp-node-1';
    const keys = keysOwnedBy(balancer, id, 'big:', 24);
    const [elsewhere] = keysOwnedBy(balancer, 'resp-node-2', 'small:', 1);
    // Node 1 stops answering: every SET the balancer reads stays in flight towards it.
    stalled.child.kill('SIGSTOP');
    resources.add(() => stalled.child.kill('SIGCONT'));
    try {
      const flooder = await rawSocket();
      // It does not read its answers either.
      flooder.socket.pause();
      flooder.socket.write(keys.map((key) => command('SET', key, VALUE)).join(''));
      // Eight SETs reach the bound: the balancer stops reading there.
      const perBound = Math.ceil(BYTES_IN_FLIGHT / VALUE.length);
      await waitFor(() => inFlightAt(id) >= perBound, 'the bound reached');
      const other = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0 });
      resources.add(() => other.disconnect());
      await other.connect();
      expect(await other.set(elsewhere!, 'served')).toBe('OK');
      expect(await other.get(elsewhere!)).toBe('served');
      // Before the fix every SET read was forwarded (up to 1024 commands of ~1 MiB per connection).
      expect(inFlightAt(id)).toBe(perBound);
      // The node answers again and the client reads: every SET completes, in order.
      stalled.child.kill('SIGCONT');
      flooder.socket.resume();
      const all = '+OK\r\n'.repeat(keys.length);
      await waitFor(() => flooder.received().length >= all.length, 'every answer');
      expect(flooder.received()).toBe(all);
      expect(await other.strlen(keys.at(-1)!)).toBe(VALUE.length);
    } finally {
      stalled.child.kill('SIGCONT');
    }
  }, 60_000);
});

describe('a RESP command that started arriving must be complete within the frame timeout', () => {
  it('a SET whose declared 512 MB bulk trickles in gets a protocol error and is closed', async () => {
    const { reply } = await trickle(
      '*3\r\n$3\r\nSET\r\n$7\r\ntrickle\r\n$536870912\r\n',
      'x'.repeat(1024),
      100,
    );
    expect(reply).toBe(`-ERR Protocol error: command incomplete after ${FRAME_TIMEOUT_MS} ms\r\n`);
  }, 30_000);

  it('a *1000000 header followed by a few elements at a time gets a protocol error and is closed', async () => {
    const { reply } = await trickle('*1000000\r\n$3\r\nDEL\r\n', '$1\r\nk\r\n', 100);
    expect(reply).toBe(`-ERR Protocol error: command incomplete after ${FRAME_TIMEOUT_MS} ms\r\n`);
  }, 30_000);

  it('a slow client whose every command completes is served for longer than the deadline', async () => {
    const raw = await rawSocket();
    const rounds = 12;
    // Each command sent in two parts a little apart, the whole run several deadlines long.
    for (let round = 0; round < rounds; round++) {
      const whole = command('SET', `slow:${round}`, VALUE.slice(0, 1000));
      raw.socket.write(whole.slice(0, 20));
      await new Promise((resolve) => setTimeout(resolve, 150));
      raw.socket.write(whole.slice(20));
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    raw.socket.write(command('PING'));
    const expected = `${'+OK\r\n'.repeat(rounds)}+PONG\r\n`;
    await waitFor(() => raw.received().length >= expected.length || raw.ended(), 'every answer');
    expect(raw.received()).toBe(expected);
    expect(raw.ended()).toBe(false);
  }, 30_000);

  it('a client pipelining commands back to back, every chunk ending inside the next one, is served for longer than the deadline', async () => {
    const raw = await rawSocket();
    const commands = Array.from({ length: 41 }, (_, round) =>
      command('SET', `busy:${round}`, VALUE.slice(0, 1000)),
    );
    const half = 20;
    // Each chunk completes one command and starts the next: a partly received command at the
    // end of every chunk, each complete within 100 ms, the stream two deadlines long.
    raw.socket.write(commands[0]!.slice(0, half));
    for (let round = 1; round < commands.length && !raw.ended(); round++) {
      await new Promise((resolve) => setTimeout(resolve, 75));
      raw.socket.write(commands[round - 1]!.slice(half) + commands[round]!.slice(0, half));
    }
    const expected = '+OK\r\n'.repeat(commands.length - 1);
    await waitFor(() => raw.received().length >= expected.length || raw.ended(), 'every answer');
    expect(raw.received()).toBe(expected);
    expect(raw.ended()).toBe(false);
  }, 30_000);
});
