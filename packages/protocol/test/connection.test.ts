import type { Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  type Connection,
  DstoreError,
  ErrorCode,
  type Message,
  MessageCodec,
  Op,
  type Request,
  type Response,
} from '../src/index.js';
import { FrameDecoder } from '../src/internal.js';
import { encodeFrame, header } from '../src/testing.js';
import { failOnUncaught, Resources, sleep, waitFor } from './helpers.js';

failOnUncaught();
const resources = new Resources();
afterEach(() => resources.closeAll());

const enc = new TextEncoder();

/** Collects the frames a raw socket receives, decoded, and whether it closed. */
function watch(socket: Socket): { messages: Message[]; closed: () => boolean } {
  const codec = new MessageCodec();
  const messages: Message[] = [];
  let closed = false;
  const decoder = new FrameDecoder(codec.limits.maxFrameBytes, (body) => messages.push(codec.decode(body)));
  socket.on('data', (chunk: Buffer) => decoder.push(chunk));
  // Our test sockets are half-open capable: answer the server's FIN as a real client would.
  socket.on('end', () => socket.end());
  socket.on('close', () => {
    closed = true;
  });
  return { messages, closed: () => closed };
}

/** A server answering GET with the key itself as the value, after `delayFor(key)` ms. */
async function echoServer(delayFor: (key: string) => number = () => 0, options = {}) {
  const served: Request[] = [];
  const { server, address } = await resources.server({
    ...options,
    onRequest: (request, connection) => {
      served.push(request);
      const answer = (): void => {
        if (request.op === Op.GET)
          connection.reply({ op: Op.VALUE, id: request.id, value: request.key.slice() });
        else connection.reply({ op: Op.OK, id: request.id });
      };
      const delay = request.op === Op.GET ? delayFor(Buffer.from(request.key).toString()) : 0;
      if (delay < 0) return; // never answered
      if (delay === 0) answer();
      else setTimeout(answer, delay);
    },
  });
  return { server, port: address.port, served };
}

function valueText(response: Response): string {
  if (response.op !== Op.VALUE || response.value === null) throw new Error(`unexpected op ${response.op}`);
  return Buffer.from(response.value).toString();
}

describe('Connection over real sockets', () => {
  it('matches out-of-order responses by id', async () => {
    const { port } = await echoServer((key) => (20 - Number(key)) * 3);
    const client = await resources.connection(port);
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => client.request({ op: Op.GET, key: enc.encode(String(i)) })),
    );
    expect(answers.map(valueText)).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
  });

  it('pipelines 10,000 requests in flight', async () => {
    const { port } = await echoServer();
    const client = await resources.connection(port, { maxInFlight: 10_000, requestTimeoutMs: 30_000 });
    const answers = await Promise.all(
      Array.from({ length: 10_000 }, (_, i) => client.request({ op: Op.GET, key: enc.encode(`k${i}`) })),
    );
    for (const [i, answer] of answers.entries()) expect(valueText(answer)).toBe(`k${i}`);
    expect(client.inFlight).toBe(0);
  });

  it('times out, counts the late answer, and never hands it to another request', async () => {
    const { port } = await echoServer((key) => (key === 'slow' ? 300 : 0));
    const client = await resources.connection(port);
    const slow = client.request({ op: Op.GET, key: enc.encode('slow') }, { timeoutMs: 50 });
    await expect(slow).rejects.toMatchObject({ code: ErrorCode.TIMEOUT, notExecuted: false });
    expect(client.inFlight).toBe(0);
    // Requests made while the late answer is on its way each get their own answer.
    const during = await Promise.all(
      Array.from({ length: 50 }, (_, i) => client.request({ op: Op.GET, key: enc.encode(`n${i}`) })),
    );
    for (const [i, answer] of during.entries()) expect(valueText(answer)).toBe(`n${i}`);
    await waitFor(() => client.lateResponses === 1, 5000, 'the late answer');
    expect(valueText(await client.request({ op: Op.GET, key: enc.encode('after') }))).toBe('after');
  });

  it('ends a request that is never answered by its deadline', async () => {
    const { port } = await echoServer(() => -1);
    const client = await resources.connection(port, { requestTimeoutMs: 80 });
    const results = await Promise.allSettled(
      Array.from({ length: 100 }, () => client.request({ op: Op.GET, key: enc.encode('x') })),
    );
    for (const result of results) {
      expect(result.status).toBe('rejected');
      expect((result as PromiseRejectedResult).reason).toMatchObject({ code: ErrorCode.TIMEOUT });
    }
  });

  it('aborts with an AbortSignal', async () => {
    const { port } = await echoServer((key) => (key === 'slow' ? 200 : 0));
    const client = await resources.connection(port);
    const controller = new AbortController();
    const pending = client.request({ op: Op.GET, key: enc.encode('slow') }, { signal: controller.signal });
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: ErrorCode.ABORTED });
    expect(client.inFlight).toBe(0);
    await expect(client.request({ op: Op.PING }, { signal: AbortSignal.abort() })).rejects.toMatchObject({
      code: ErrorCode.ABORTED,
    });
    await waitFor(() => client.lateResponses === 1, 5000, 'the aborted request answer');
  });

  it('fails pending requests with CONNECTION_CLOSED when the peer closes mid-frame', async () => {
    const { createServer } = await import('node:net');
    const server = createServer((socket) => {
      socket.once('data', () => {
        const half = encodeFrame({ op: Op.OK, id: 1 });
        socket.end(Buffer.from(half.subarray(0, 3)));
      });
    });
    resources.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const client = await resources.connection(port, { requestTimeoutMs: 20_000 });
    const closed = new Promise((resolve) => client.once('close', resolve));
    const results = await Promise.allSettled([
      client.request({ op: Op.PING }),
      client.request({ op: Op.PING }),
    ]);
    for (const result of results) {
      expect((result as PromiseRejectedResult).reason).toMatchObject({ code: ErrorCode.CONNECTION_CLOSED });
    }
    await closed;
    expect(client.isOpen).toBe(false);
    await expect(client.request({ op: Op.PING })).rejects.toMatchObject({
      code: ErrorCode.CONNECTION_CLOSED,
    });
  });

  it('refuses requests past maxInFlight with BUSY (not executed)', async () => {
    const { port } = await echoServer(() => -1);
    const client = await resources.connection(port, { maxInFlight: 2 });
    void client.request({ op: Op.GET, key: enc.encode('a') }).catch(() => undefined);
    void client.request({ op: Op.GET, key: enc.encode('b') }).catch(() => undefined);
    const error = await client.request({ op: Op.GET, key: enc.encode('c') }).catch((caught) => caught);
    expect(error).toBeInstanceOf(DstoreError);
    expect(error).toMatchObject({ code: ErrorCode.BUSY, notExecuted: true });
  });

  it('sends the frames of one tick in one socket write', async () => {
    const { port } = await echoServer();
    const client = await resources.connection(port);
    const write = vi.spyOn(client.socket, 'write');
    const answers = Array.from({ length: 200 }, (_, i) =>
      client.request({ op: Op.GET, key: enc.encode(`${i}`) }),
    );
    await Promise.all(answers);
    expect(write).toHaveBeenCalledTimes(1);
  });

  it('answers the requests of a received chunk in one write as the chunk ends, before the end of the tick', async () => {
    const { server, port } = await echoServer();
    const chunks: { pending: number; writes: number }[] = [];
    server.on('connection', (connection: Connection) => {
      const write = vi.spyOn(connection.socket, 'write');
      // Added after the connection's own listener, so it runs once the chunk is served.
      connection.socket.on('data', () =>
        chunks.push({
          pending: connection.bufferedOutputBytes - connection.socket.writableLength,
          writes: write.mock.calls.length,
        }),
      );
    });
    const socket = await resources.socket(port);
    const { messages } = watch(socket);
    const frames = Array.from({ length: 50 }, (_, i) =>
      encodeFrame({ op: Op.GET, id: i + 1, key: enc.encode(`k${i}`) }),
    );
    socket.write(Buffer.concat(frames));
    await waitFor(() => messages.length === 50, 5000, 'the 50 answers');
    // Nothing was left for the end-of-tick flush: each chunk's answers were written as it ended.
    expect(chunks.length).toBeGreaterThan(0);
    for (const chunk of chunks) expect(chunk.pending).toBe(0);
    expect(chunks[0]!.writes).toBeGreaterThanOrEqual(1);
    expect(chunks.at(-1)!.writes).toBeLessThanOrEqual(chunks.length);
    expect(messages.map((message) => valueText(message as Response))).toEqual(
      Array.from({ length: 50 }, (_, i) => `k${i}`),
    );
  });

  it('refuses locally a request too large for one frame, and stays usable', async () => {
    const { port } = await echoServer();
    const client = await resources.connection(port, { limits: { maxFrameBytes: 1024, maxValueBytes: 512 } });
    await expect(
      client.request({ op: Op.SET, key: enc.encode('k'), value: new Uint8Array(4096) }),
    ).rejects.toMatchObject({ code: ErrorCode.FRAME_TOO_LARGE });
    expect(client.inFlight).toBe(0);
    expect((await client.request({ op: Op.PING })).op).toBe(Op.OK);
  });

  it('passes the peer error code through, including codes it does not know', async () => {
    const { port } = await resources
      .server({
        onRequest: (request, connection) => connection.replyError(request.id, 'FROM_THE_FUTURE', 'new code'),
      })
      .then(({ address }) => address);
    const client = await resources.connection(port);
    await expect(client.request({ op: Op.PING })).rejects.toMatchObject({
      code: 'FROM_THE_FUTURE',
      message: 'new code',
      notExecuted: false,
    });
  });

  it('answers an MGET whose values pass the frame limit with FRAME_TOO_LARGE saying what to do', async () => {
    const big = new Uint8Array(600 * 1024);
    const { address } = await resources.server({
      onRequest: (request, connection) => {
        if (request.op === Op.MGET) connection.reply({ op: Op.VALUES, id: request.id, values: [big, big] });
        else connection.reply({ op: Op.OK, id: request.id });
      },
    });
    const client = await resources.connection(address.port);
    const error = await client
      .request({ op: Op.MGET, keys: [enc.encode('a'), enc.encode('b')] })
      .catch((e) => e);
    expect(error).toMatchObject({ code: ErrorCode.FRAME_TOO_LARGE });
    expect((error as Error).message).toContain('fewer keys per MGET');
    expect((await client.request({ op: Op.PING })).op).toBe(Op.OK);
  });

  it('answers INTERNAL when onRequest throws, and keeps serving', async () => {
    const { address } = await resources.server({
      onRequest: (request, connection) => {
        if (request.op === Op.GET) throw new Error('handler bug');
        connection.reply({ op: Op.OK, id: request.id });
      },
    });
    const client = await resources.connection(address.port);
    await expect(client.request({ op: Op.GET, key: enc.encode('x') })).rejects.toMatchObject({
      code: ErrorCode.INTERNAL,
    });
    expect((await client.request({ op: Op.PING })).op).toBe(Op.OK);
  });

  it('closes a slow sender with FRAME_TIMEOUT', async () => {
    const { port } = await echoServer(() => 0, { connection: { frameTimeoutMs: 200 } });
    const socket = await resources.socket(port);
    const seen = watch(socket);
    socket.write(header(100, new Uint8Array(10)));
    await waitFor(seen.closed, 10_000, 'the server to close');
    expect(seen.messages).toEqual([
      expect.objectContaining({ op: Op.ERROR, id: 0, code: ErrorCode.FRAME_TIMEOUT }),
    ]);
  });

  it('backpressure: stops reading from a peer that does not read, then recovers', async () => {
    const maxOutputBytes = 4 * 1024 * 1024;
    const value = new Uint8Array(16 * 1024);
    let serverConnection: Connection | undefined;
    const { address, server } = await resources.server({
      connection: { maxOutputBytes },
      onRequest: (request, connection) => {
        serverConnection = connection;
        connection.reply({ op: Op.VALUE, id: request.id, value });
      },
    });
    const client = await resources.connection(address.port, { maxInFlight: 5000, requestTimeoutMs: 60_000 });
    client.socket.pause();
    const answers: Promise<Response>[] = [];
    let peakOutput = 0;
    for (let batch = 0; batch < 200; batch++) {
      for (let i = 0; i < 10; i++) answers.push(client.request({ op: Op.GET, key: enc.encode('k') }));
      await sleep(2);
      peakOutput = Math.max(peakOutput, serverConnection?.bufferedOutputBytes ?? 0);
    }
    // 2000 x 16 KiB = 32 MiB requested; the server must have stopped reading instead of buffering it.
    expect(peakOutput).toBeLessThanOrEqual(maxOutputBytes);
    expect(serverConnection?.isOpen).toBe(true);
    expect(server.connectionCount).toBe(1);
    client.socket.resume();
    const all = await Promise.all(answers);
    expect(all).toHaveLength(2000);
  });

  it('drops a peer whose unread answers exceed maxOutputBytes', async () => {
    const value = new Uint8Array(64 * 1024);
    const closes: (Error | undefined)[] = [];
    // Answers come later, all together: more than the output bound for a peer that reads nothing.
    const { address, server } = await resources.server({
      connection: { maxOutputBytes: 1024 * 1024 },
      onRequest: (request, connection) =>
        setTimeout(() => connection.reply({ op: Op.VALUE, id: request.id, value }), 20),
    });
    server.on('connection', (connection) => connection.on('close', (error) => closes.push(error)));
    const socket = await resources.socket(address.port);
    socket.pause();
    const seen = watch(socket);
    const frames = Array.from({ length: 300 }, (_, i) =>
      encodeFrame({ op: Op.GET, id: i + 1, key: enc.encode('k') }),
    );
    socket.write(Buffer.concat(frames));
    await waitFor(() => closes.length === 1, 10_000, 'the server to drop the connection');
    expect(closes[0]).toMatchObject({ code: ErrorCode.BUSY });
    socket.resume();
    await waitFor(seen.closed, 10_000, 'the socket to close');
  });

  it('graceful Connection.close() still collects answers to pending requests', async () => {
    const { port } = await echoServer(() => 50);
    const client = await resources.connection(port);
    const answers = Array.from({ length: 5 }, (_, i) =>
      client.request({ op: Op.GET, key: enc.encode(`${i}`) }),
    );
    const closed = client.close();
    expect(client.isOpen).toBe(false);
    await expect(client.request({ op: Op.PING })).rejects.toMatchObject({
      code: ErrorCode.CONNECTION_CLOSED,
    });
    expect((await Promise.all(answers)).map(valueText)).toEqual(['0', '1', '2', '3', '4']);
    await closed;
  });

  it('a peer half-closing fails our pending requests at once', async () => {
    const { createServer } = await import('node:net');
    const server = createServer({ allowHalfOpen: true }, (socket) => {
      socket.once('data', () => socket.end());
    });
    resources.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = await resources.connection((server.address() as { port: number }).port, {
      requestTimeoutMs: 60_000,
    });
    await expect(client.request({ op: Op.PING })).rejects.toMatchObject({
      code: ErrorCode.CONNECTION_CLOSED,
    });
  });
});
