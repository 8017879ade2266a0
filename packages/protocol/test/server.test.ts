import { type AddressInfo, createServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Authenticator,
  type Connection,
  DstoreError,
  ErrorCode,
  FrameServer,
  handshake,
  type Message,
  MessageCodec,
  Op,
  PeerLink,
  PROTOCOL_VERSION,
  ProtocolError,
  type Request,
  UserDirectory,
} from '../src/index.js';
import { FrameDecoder } from '../src/internal.js';
import { badInputCorpus, frame } from '../src/testing.js';
import { failOnUncaught, Resources, waitFor } from './helpers.js';

failOnUncaught();
const resources = new Resources();
afterEach(() => resources.closeAll());

/** The reference server: HELLO (and AUTH, with a token) first, then PING. */
async function handler(token?: string): Promise<(request: Request, connection: Connection) => void> {
  const auth = new Authenticator({
    role: 'node',
    serverId: () => 'n1',
    users: token === undefined ? undefined : await UserDirectory.open({ token }),
  });
  return (request, connection) => {
    if (auth.gate(connection, request)) connection.reply({ op: Op.OK, id: request.id });
  };
}

/** Credentials of the token user. */
const tokenUser = (password: string) => ({ kind: 'user' as const, user: 'default', password });

function watch(
  socket: Socket,
  respClient = false,
): { messages: Message[]; text: () => string; closed: () => boolean } {
  const codec = new MessageCodec();
  const messages: Message[] = [];
  let text = '';
  let closed = false;
  const decoder = new FrameDecoder(codec.limits.maxFrameBytes, (body) => messages.push(codec.decode(body)));
  // A Redis client's command is answered in RESP: kept as text, not decoded as frames.
  socket.on('data', (chunk: Buffer) => {
    if (respClient) text += chunk.toString('latin1');
    else decoder.push(chunk);
  });
  socket.on('end', () => socket.end());
  socket.on('close', () => {
    closed = true;
  });
  return { messages, text: () => text, closed: () => closed };
}

async function pingWorks(port: number): Promise<void> {
  const client = await resources.connection(port);
  expect((await client.request({ op: Op.PING })).op).toBe(Op.OK);
  client.destroy();
}

describe('FrameServer', () => {
  it('survives every case of the bad-input corpus', async () => {
    const protocolErrors: ProtocolError[] = [];
    const { server, address } = await resources.server({
      connection: { frameTimeoutMs: 200 },
      onRequest: await handler(),
    });
    server.on('connection', (connection) =>
      connection.on('protocolError', (error) => protocolErrors.push(error)),
    );
    for (const badCase of badInputCorpus()) {
      const socket = await resources.socket(address.port);
      const seen = watch(socket, badCase.respClient);
      socket.write(badCase.bytes);
      await waitFor(
        () => seen.closed() || seen.messages.some((message) => message.op === Op.ERROR),
        10_000,
        `a reply to "${badCase.name}"`,
      );
      if (badCase.closes) await waitFor(seen.closed, 10_000, `"${badCase.name}" to close the connection`);
      for (const message of seen.messages) {
        expect(message.op, badCase.name).toBe(Op.ERROR);
      }
      if (badCase.respClient) expect(seen.text(), badCase.name).toMatch(/^-ERR [^\r\n]+\r\n$/);
      socket.destroy();
      await pingWorks(address.port);
    }
    expect(protocolErrors.every((error) => error instanceof ProtocolError)).toBe(true);
    expect(protocolErrors.length).toBeGreaterThan(badInputCorpus().length);
  });

  it('refuses connections past maxConnections with BUSY, then closes them', async () => {
    const refused: string[] = [];
    const { server, address } = await resources.server({ maxConnections: 1, onRequest: await handler() });
    server.on('refused', (remote) => refused.push(remote));
    const first = await resources.connection(address.port);
    expect((await first.request({ op: Op.PING })).op).toBe(Op.OK);

    const raw = await resources.socket(address.port);
    const seen = watch(raw);
    await waitFor(seen.closed, 10_000, 'the refused socket to close');
    expect(seen.messages).toEqual([expect.objectContaining({ op: Op.ERROR, id: 0, code: ErrorCode.BUSY })]);

    // A Connection sees the refusal as BUSY (not executed, safe to retry), not as a bare close.
    const second = await resources.connection(address.port);
    const error = await second.request({ op: Op.PING }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DstoreError);
    expect(error).toMatchObject({ code: ErrorCode.BUSY, notExecuted: true });
    expect(refused.length).toBe(2);
    expect(server.connectionCount).toBe(1);
  });

  it('closes gracefully: in-flight requests are answered first', async () => {
    const server = new FrameServer({
      onRequest: (request, connection) =>
        setTimeout(() => connection.reply({ op: Op.OK, id: request.id }), 100),
    });
    resources.add(() => server.close(100));
    const { port } = await server.listen();
    const client = await resources.connection(port);
    const answers = Array.from({ length: 10 }, () => client.request({ op: Op.PING }));
    await waitFor(
      () => [...server.openConnections].some((connection) => connection.serving === 10),
      5000,
      'the server to receive the requests',
    );
    const closed = server.close();
    const results = await Promise.all(answers);
    expect(results.every((result) => result.op === Op.OK)).toBe(true);
    await closed;
    expect(server.connectionCount).toBe(0);
    await waitFor(() => !client.isOpen, 5000, 'the client to see the close');
  });
});

describe('the frame timeout', () => {
  it('counts from when the frame left partly received began: frames sent back to back in time keep the connection', async () => {
    const server = new FrameServer({
      connection: { frameTimeoutMs: 1000 },
      onRequest: (request, connection) => connection.reply({ op: Op.OK, id: request.id }),
    });
    resources.add(() => server.close(100));
    const { port } = await server.listen();
    const socket = await resources.socket(port);
    const seen = watch(socket);
    // Every chunk completes a frame and starts the next (a busy link rarely ends a chunk on a
    // frame's end); each frame takes 50 ms, the whole stream twice the frame timeout.
    const frames = Array.from({ length: 41 }, (_, id) =>
      frame(new MessageCodec().encode({ op: Op.PING, id })),
    );
    const half = Math.floor(frames[0]!.length / 2);
    socket.write(frames[0]!.subarray(0, half));
    for (let id = 1; id < frames.length && !seen.closed(); id++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      socket.write(Buffer.concat([frames[id - 1]!.subarray(half), frames[id]!.subarray(0, half)]));
    }
    await waitFor(() => seen.messages.length >= frames.length - 1 || seen.closed(), 5000, 'the answers');
    expect(seen.closed()).toBe(false);
    expect(seen.messages.map((message) => message.op)).toEqual(frames.slice(1).map(() => Op.OK));
  });
});

describe('graceful close, request by request', () => {
  it('ends with SHUTTING_DOWN (id 0) after its answers, so what crossed the end fails as not executed', async () => {
    const server = new FrameServer({
      onRequest: (request, connection) =>
        setTimeout(() => connection.reply({ op: Op.OK, id: request.id }), 50),
    });
    resources.add(() => server.close(100));
    const { port } = await server.listen();
    // The server's side: its answer, then the goodbye, then the end.
    const socket = await resources.socket(port);
    const seen = watch(socket);
    socket.write(frame(new MessageCodec().encode({ op: Op.PING, id: 7 })));
    await waitFor(
      () => server.connectionCount === 1 && [...server.openConnections][0]!.serving === 1,
      5000,
      'the PING read',
    );
    void server.close();
    await waitFor(seen.closed, 5000, 'the server to end the connection');
    expect(seen.messages).toEqual([
      { op: Op.OK, id: 7 },
      expect.objectContaining({ op: Op.ERROR, id: 0, code: ErrorCode.SHUTTING_DOWN }),
    ]);
  });

  it('a client whose request the server never read gets SHUTTING_DOWN, not executed', async () => {
    // A server that read nothing of it: says goodbye and ends, as a closing server does.
    const raw = createServer((socket) => {
      socket.on('data', () => {
        socket.end(
          frame(
            new MessageCodec().encode({ op: Op.ERROR, id: 0, code: ErrorCode.SHUTTING_DOWN, message: 'bye' }),
          ),
        );
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    resources.add(() => new Promise<void>((resolve) => raw.close(() => resolve())));
    const client = await resources.connection((raw.address() as AddressInfo).port);
    await expect(client.request({ op: Op.PING })).rejects.toMatchObject({
      code: ErrorCode.SHUTTING_DOWN,
      notExecuted: true,
    });
  });
});

describe('HELLO', () => {
  it('refuses another protocol version with VERSION_MISMATCH', async () => {
    const { address } = await resources.server({ onRequest: await handler() });
    const client = await resources.connection(address.port);
    await expect(
      client.request({ op: Op.HELLO, version: PROTOCOL_VERSION + 1, role: 'client' }),
    ).rejects.toMatchObject({ code: ErrorCode.VERSION_MISMATCH });
    const hello = await handshake(client, 'client');
    expect(hello).toMatchObject({ op: Op.HELLO_OK, version: PROTOCOL_VERSION, role: 'node', serverId: 'n1' });
  });

  it('checks the token and marks the connection authenticated', async () => {
    const { server, address } = await resources.server({ onRequest: await handler('s3cret') });
    const client = await resources.connection(address.port);
    await expect(client.request({ op: Op.PING })).rejects.toMatchObject({
      code: ErrorCode.UNAUTHORIZED,
      notExecuted: true,
    });
    await expect(handshake(client, 'client')).rejects.toMatchObject({ code: ErrorCode.UNAUTHORIZED });
    // A wrong password ends the connection: one attempt per connection.
    const wrong = await resources.connection(address.port);
    await expect(handshake(wrong, 'client', { credentials: tokenUser('wrong') })).rejects.toMatchObject({
      code: ErrorCode.UNAUTHORIZED,
    });
    await handshake(client, 'client', { credentials: tokenUser('s3cret') });
    expect([...server.openConnections].some((connection) => connection.authenticated)).toBe(true);
    expect((await client.request({ op: Op.PING })).op).toBe(Op.OK);
  });

  it('handshake refuses a HELLO_OK of another version', async () => {
    const { address } = await resources.server({
      onRequest: (request, connection) =>
        connection.reply({ op: Op.HELLO_OK, id: request.id, version: 99, role: 'node', serverId: 'x' }),
    });
    const client = await resources.connection(address.port);
    await expect(handshake(client, 'client')).rejects.toMatchObject({ code: ErrorCode.VERSION_MISMATCH });
  });
});

describe('PeerLink', () => {
  it('reconnects after the server restarts on the same port', async () => {
    const first = new FrameServer({ onRequest: await handler('t') });
    resources.add(() => first.close(100));
    const { port } = await first.listen();
    const link = new PeerLink({
      host: '127.0.0.1',
      port,
      credentials: tokenUser('t'),
      backoff: { initialDelayMs: 20, maxDelayMs: 100 },
    });
    resources.add(() => link.close());
    const readies: string[] = [];
    const reconnects: number[] = [];
    link.on('ready', (hello) => readies.push(hello.serverId));
    link.on('reconnecting', (_delay, attempt) => reconnects.push(attempt));
    link.start();
    await waitFor(() => link.isReady, 5000, 'the first ready');
    expect((await link.request({ op: Op.PING })).op).toBe(Op.OK);

    await first.close(100);
    await waitFor(() => !link.isReady, 5000, 'the link to notice');
    await expect(link.request({ op: Op.PING })).rejects.toMatchObject({
      code: ErrorCode.UNAVAILABLE,
      notExecuted: true,
    });
    await waitFor(() => reconnects.length >= 2, 5000, 'a failed reconnect attempt');

    const second = new FrameServer({ port, onRequest: await handler('t') });
    resources.add(() => second.close(100));
    await second.listen();
    await waitFor(() => link.isReady, 10_000, 'the link to come back');
    expect(readies).toEqual(['n1', 'n1']);
    expect(link.peerHello?.serverId).toBe('n1');
    expect((await link.request({ op: Op.PING })).op).toBe(Op.OK);
  });

  it('emits end when retryStrategy returns null', async () => {
    const probe = new FrameServer({ onRequest: await handler() });
    const { port } = await probe.listen();
    await probe.close(0);
    const attempts: number[] = [];
    const link = new PeerLink({
      host: '127.0.0.1',
      port,
      retryStrategy: (attempt, error) => {
        attempts.push(attempt);
        expect(error).toBeInstanceOf(DstoreError);
        return attempt < 3 ? 10 : null;
      },
    });
    resources.add(() => link.close());
    const ended = new Promise<void>((resolve) => link.once('end', resolve));
    link.start();
    await ended;
    expect(attempts).toEqual([1, 2, 3]);
    expect(link.isReady).toBe(false);
  });

  it('emits error only to listeners and keeps retrying after a refused HELLO', async () => {
    const { address } = await resources.server({ onRequest: await handler('right') });
    const errors: Error[] = [];
    const link = new PeerLink({
      host: '127.0.0.1',
      port: address.port,
      credentials: tokenUser('wrong'),
      retryStrategy: (attempt) => (attempt < 2 ? 10 : null),
    });
    resources.add(() => link.close());
    link.on('error', (error) => errors.push(error));
    const ended = new Promise<void>((resolve) => link.once('end', resolve));
    link.start();
    await ended;
    expect(errors.length).toBeGreaterThanOrEqual(2);
    expect(errors[0]).toMatchObject({ code: ErrorCode.UNAUTHORIZED });
  });
});
