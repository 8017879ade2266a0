import {
  DstoreError,
  ErrorCode,
  MessageCodec,
  Op,
  PROTOCOL_VERSION,
  type Response,
  toBytes,
} from '@dstore/protocol';
import { FrameDecoder } from '@dstore/protocol/internal';
import { badInputCorpus, encodeFrame, header } from '@dstore/protocol/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { StorageNode } from '../src/index.js';
import { capturingLogger, collectUntilClose, Resources, sleep, waitFor } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

/** Decodes the ERROR/response frames a raw socket received. */
function decodeResponses(bytes: Uint8Array): Response[] {
  const codec = new MessageCodec();
  const responses: Response[] = [];
  const decoder = new FrameDecoder(codec.limits.maxFrameBytes, (body) => {
    responses.push(codec.decode(body) as Response);
  });
  decoder.push(bytes);
  return responses;
}

async function pingOnNewConnection(port: number): Promise<void> {
  const client = await resources.client(port);
  const answer = await client.request({ op: Op.PING }, { timeoutMs: 2000 });
  expect(answer.op).toBe(Op.OK);
}

// The frame checks run before the engine is involved: one engine is enough case by case; the
// all-in-a-row test below runs against both.
describe('bad input, case by case, against a live node', () => {
  const shared = new Resources();
  let node: StorageNode;
  beforeAll(async () => {
    node = await shared.node({ engine: 'memory' });
  });
  afterAll(() => shared.cleanup());

  it.each(badInputCorpus())('$name: answered or closed, then a new connection is served', async (badCase) => {
    const socket = await resources.rawSocket(node.address.port);
    // Closing cases must close; the others may leave a partial frame pending, so wait briefly.
    const received = collectUntilClose(socket, badCase.closes ? 3000 : 100);
    socket.write(badCase.bytes);
    const { bytes, closed } = await received;
    if (badCase.closes) expect(closed).toBe(true);
    if (badCase.respClient) {
      // A Redis client's command is answered with one RESP error line it can print.
      expect(Buffer.from(bytes).toString('latin1')).toMatch(/^-ERR [^\r\n]+\r\n$/);
    } else {
      for (const response of decodeResponses(bytes)) {
        expect(response.op === Op.ERROR || response.op === Op.OK).toBe(true);
      }
    }
    socket.destroy();
    await pingOnNewConnection(node.address.port);
  });
});

describe.each(['memory', 'lmdb'] as const)('bad input in a row against a live node (%s)', (engine) => {
  const shared = new Resources();
  let node: StorageNode;
  beforeAll(async () => {
    node = await shared.node(engine === 'lmdb' ? { engine, dataDir: shared.tempDir() } : { engine });
  });
  afterAll(() => shared.cleanup());

  it('survives every corpus case on one connection, then garbage and an abrupt disconnect', async () => {
    for (const badCase of badInputCorpus()) {
      const socket = await resources.rawSocket(node.address.port);
      socket.write(badCase.bytes);
      socket.destroy();
    }
    const socket = await resources.rawSocket(node.address.port);
    socket.write(
      encodeFrame({ op: Op.SET, id: 1, key: toBytes('k'), value: new Uint8Array(10_000) }).slice(0, 5000),
    );
    socket.write(new Uint8Array(100).fill(0xc1));
    socket.resetAndDestroy();
    await sleep(50);
    await pingOnNewConnection(node.address.port);
    expect(node.stats().errors).toBeGreaterThan(0);
  });
});

describe('connection limits', () => {
  it('refuses the connection past maxConnections with BUSY and closes it', async () => {
    const node = await resources.node({ maxConnections: 2 });
    const first = await resources.client(node.address.port);
    const second = await resources.client(node.address.port);
    // Past the cap, a connection that authenticates is answered BUSY and closed.
    const third = await resources.rawSocket(node.address.port);
    third.write(encodeFrame({ op: Op.HELLO, id: 1, version: PROTOCOL_VERSION, role: 'client' }));
    const { bytes, closed } = await collectUntilClose(third, 3000);
    expect(closed).toBe(true);
    const [refusal] = decodeResponses(bytes);
    expect(refusal).toMatchObject({ op: Op.ERROR, code: ErrorCode.BUSY });
    expect((await first.request({ op: Op.PING })).op).toBe(Op.OK);
    second.destroy();
    await waitFor(() => node.stats().connections === 1, 2000, 'the second connection to be gone');
    await pingOnNewConnection(node.address.port);
  });

  it('closes a connection idle for idleTimeoutMs', async () => {
    const node = await resources.node({ idleTimeoutMs: 100 });
    const client = await resources.client(node.address.port);
    const closed = new Promise((resolve) => client.once('close', resolve));
    await closed;
    expect(client.isOpen).toBe(false);
    await pingOnNewConnection(node.address.port);
  });

  it('answers FRAME_TIMEOUT to a slow sender and closes its connection', async () => {
    const node = await resources.node({ frameTimeoutMs: 100 });
    const socket = await resources.rawSocket(node.address.port);
    const received = collectUntilClose(socket, 3000);
    // A header announcing 100 bytes and only 10 of them: the frame never completes.
    socket.write(header(100, new Uint8Array(10)));
    const { bytes, closed } = await received;
    expect(closed).toBe(true);
    const [timeout] = decodeResponses(bytes);
    expect(timeout).toMatchObject({ op: Op.ERROR, code: ErrorCode.FRAME_TIMEOUT });
    await pingOnNewConnection(node.address.port);
  });

  it('keeps serving other connections while one peer does not read its answers', async () => {
    const node = await resources.node({ maxOutputBytes: 64 * 1024 });
    const hog = await resources.rawSocket(node.address.port);
    hog.pause();
    const big = new Uint8Array(32 * 1024);
    const client = await resources.client(node.address.port);
    await client.request({ op: Op.SET, key: toBytes('big'), value: big });
    const get = encodeFrame({ op: Op.GET, id: 1, key: toBytes('big') });
    for (let i = 0; i < 200; i++) hog.write(get);
    await sleep(100);
    const answer = await client.request({ op: Op.GET, key: toBytes('big') });
    expect(answer.op).toBe(Op.VALUE);
  });

  it('drops the direct clients holding the most once the answers waiting for all of them pass maxClientOutputBytes', async () => {
    const { logger, records } = capturingLogger('warn');
    const node = await resources.node({ maxClientOutputBytes: 2 * 1024 * 1024, logger });
    const client = await resources.client(node.address.port);
    await client.request({ op: Op.SET, key: toBytes('big'), value: new Uint8Array(256 * 1024) });
    // Three clients each ask for 40 answers of 256 KiB (10 MiB: within their own 16 MiB bound) and
    // read none: together far past the node's 2 MiB.
    const gets = Buffer.concat(
      Array.from({ length: 40 }, (_, index) =>
        encodeFrame({ op: Op.GET, id: index + 1, key: toBytes('big') }),
      ),
    );
    for (let hog = 0; hog < 3; hog++) {
      const socket = await resources.rawSocket(node.address.port);
      socket.pause();
      socket.write(gets);
    }
    await waitFor(
      () => records.filter((record) => record.msg.startsWith('client connection dropped')).length >= 2,
      10_000,
      'the clients holding the most to be dropped',
    );
    // A client that reads is served.
    const answer = await client.request({ op: Op.GET, key: toBytes('big') });
    expect(answer.op).toBe(Op.VALUE);
  });

  it('rejects a request before HELLO with a typed error the client can read', async () => {
    const node = await resources.node({ token: 't' });
    const connection = await resources.connection(node.address.port);
    const error = await connection.request({ op: Op.PING }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DstoreError);
    expect((error as DstoreError).code).toBe(ErrorCode.UNAUTHORIZED);
  });
});
