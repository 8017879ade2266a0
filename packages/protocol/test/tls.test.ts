import { mkdtempSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer, connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  Authenticator,
  Connection,
  connectSocket,
  DstoreError,
  ErrorCode,
  FailoverLink,
  Op,
  PeerLink,
  peerClientTls,
  readPeerTlsFiles,
  TLS_REQUIRED_MESSAGE,
} from '../src/index.js';
import { createTestPki, type TestPki } from '../src/testing.js';
import { failOnUncaught, Resources, waitFor } from './helpers.js';

failOnUncaught();
const resources = new Resources();
afterEach(() => resources.closeAll());

let dir: string;
let pki: TestPki;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'dstore-tls-'));
  pki = createTestPki(dir);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A TLS FrameServer answering PING, recording whether each connection's peer verified. */
async function tlsServer(
  handshakeTimeoutMs?: number,
  pending?: { maxPendingConnections: number; maxPendingPerAddress: number },
) {
  const verified: boolean[] = [];
  const { server, address } = await resources.server({
    ...pending,
    tls: {
      cert: pki.peer.cert,
      key: pki.peer.key,
      ca: pki.ca.cert,
      ...(handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs }),
    },
    onRequest: (request, connection) => {
      if (request.op === Op.HELLO) {
        new Authenticator({ role: 'balancer', serverId: () => 'tls-test' }).respond(connection, request);
        return;
      }
      verified.push(connection.tlsPeerVerified);
      connection.reply({ op: Op.OK, id: request.id });
    },
  });
  return { server, port: address.port, verified };
}

async function tlsConnection(port: number, tls: Parameters<typeof connectSocket>[0]['tls']) {
  const socket = await connectSocket({ host: '127.0.0.1', port, tls });
  const connection = new Connection(socket);
  resources.add(() => connection.destroy());
  return connection;
}

describe('TLS', () => {
  it('serves a client that verifies the server, and tells peers with a CA-signed certificate apart', async () => {
    const { port, verified } = await tlsServer();
    const anonymous = await tlsConnection(port, { ca: pki.ca.cert });
    expect(anonymous.tlsPeerVerified).toBe(true); // the client verified the server
    expect((await anonymous.request({ op: Op.PING })).op).toBe(Op.OK);
    const peer = await tlsConnection(
      port,
      peerClientTls({ cert: pki.peer.cert, key: pki.peer.key, ca: pki.ca.cert }),
    );
    expect((await peer.request({ op: Op.PING })).op).toBe(Op.OK);
    const rogue = await tlsConnection(port, { ca: pki.ca.cert, cert: pki.rogue.cert, key: pki.rogue.key });
    expect((await rogue.request({ op: Op.PING })).op).toBe(Op.OK);
    expect(verified).toEqual([false, true, false]);
  });

  it('does not take a resumed TLS session without a client certificate for a verified peer', async () => {
    const { port, verified } = await tlsServer();
    // One connection without a certificate hands out a session ticket (TLS 1.3)...
    const ticket = await new Promise<Buffer>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port, ca: pki.ca.cert, servername: 'localhost' });
      socket.on('error', reject);
      socket.once('session', (session: Buffer) => {
        socket.destroy();
        resolve(session);
      });
    });
    // ...and a connection resuming it, still without a certificate, is not a verified peer.
    const resumed = tlsConnect({
      host: '127.0.0.1',
      port,
      ca: pki.ca.cert,
      servername: 'localhost',
      session: ticket,
    });
    resumed.on('error', () => undefined);
    await new Promise<void>((resolve) => resumed.once('secureConnect', () => resolve()));
    const connection = new Connection(resumed);
    resources.add(() => connection.destroy());
    expect((await connection.request({ op: Op.PING })).op).toBe(Op.OK);
    expect(verified).toEqual([false]);
  });

  it('keeps room for clients while sockets that say nothing fill the handshake slots', async () => {
    const { port } = await tlsServer(undefined, { maxPendingConnections: 8, maxPendingPerAddress: 4 });
    // Twenty sockets from one address, opened and left silent: each new one past the address's
    // four evicts that address's oldest.
    let closed = 0;
    for (let index = 0; index < 20; index++) {
      const socket = netConnect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
      socket.on('error', () => undefined);
      socket.on('close', () => closed++);
      resources.add(() => {
        socket.destroy();
      });
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    }
    await waitFor(() => closed >= 16, 5000, 'the oldest silent sockets to be evicted');
    // A client from another address gets through.
    const client = await tlsConnection(port, { ca: pki.ca.cert });
    expect((await client.request({ op: Op.PING })).op).toBe(Op.OK);
    // Eight silent sockets from eight addresses fill the gate; a client's socket still evicts the oldest.
    for (let index = 0; index < 8; index++) {
      const socket = netConnect({ host: '127.0.0.1', port, localAddress: `127.0.1.${index + 1}` });
      socket.on('error', () => undefined);
      resources.add(() => {
        socket.destroy();
      });
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    }
    const another = await tlsConnection(port, { ca: pki.ca.cert });
    expect((await another.request({ op: Op.PING })).op).toBe(Op.OK);
  });

  it('answers a plaintext client with TLS_REQUIRED and closes', async () => {
    const { port } = await tlsServer();
    const connection = await resources.connection(port);
    const failure = await connection.request({ op: Op.PING }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(DstoreError);
    expect((failure as DstoreError).code).toBe(ErrorCode.TLS_REQUIRED);
    expect((failure as DstoreError).message).toBe(TLS_REQUIRED_MESSAGE);
    expect(connection.isOpen).toBe(false);
  });

  it('fails a client with the wrong CA with UNAVAILABLE naming the certificate problem', async () => {
    const { port } = await tlsServer();
    const failure = await connectSocket({ host: '127.0.0.1', port, tls: { ca: pki.rogueCa.cert } }).catch(
      (error: unknown) => error,
    );
    expect((failure as DstoreError).code).toBe(ErrorCode.UNAVAILABLE);
    expect((failure as DstoreError).message).toMatch(/certificate/);
  });

  it('fails a TLS connect to a plaintext port with UNAVAILABLE', async () => {
    const { address } = await resources.server({ onRequest: () => undefined });
    const failure = await connectSocket({
      host: '127.0.0.1',
      port: address.port,
      tls: { ca: pki.ca.cert },
    }).catch((error: unknown) => error);
    expect((failure as DstoreError).code).toBe(ErrorCode.UNAVAILABLE);
    expect((failure as DstoreError).message).toMatch(
      /^TLS connection to 127\.0\.0\.1:\d+ failed: the peer did not answer in TLS \(is this a plaintext port\? .*\(ERR_SSL_/s,
    );
  });

  it('times out a TLS connect to a server that never answers the handshake', async () => {
    // Accepts and says nothing: the handshake can only end by the connect deadline.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      socket.on('error', () => undefined);
      sockets.add(socket);
    });
    resources.add(
      () =>
        new Promise<void>((resolve) => {
          for (const socket of sockets) socket.destroy();
          silent.close(() => resolve());
        }),
    );
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const failure = await connectSocket({
      host: '127.0.0.1',
      port: (silent.address() as AddressInfo).port,
      connectTimeoutMs: 200,
      tls: { ca: pki.ca.cert },
    }).catch((error: unknown) => error);
    expect((failure as DstoreError).code).toBe(ErrorCode.TIMEOUT);
  });

  it('closes a socket that sends nothing within the handshake deadline', async () => {
    const { port, server } = await tlsServer(100);
    const socket = netConnect({ host: '127.0.0.1', port });
    socket.on('error', () => undefined);
    resources.add(() => {
      socket.destroy();
    });
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    expect(server.connectionCount).toBe(0);
  });

  it('PeerLink and FailoverLink connect over TLS', async () => {
    const { port, verified } = await tlsServer();
    const tls = { ca: pki.ca.cert };
    const link = new PeerLink({ host: '127.0.0.1', port, tls });
    resources.add(() => link.close());
    link.start();
    await link.whenReady(5000);
    expect(link.isReady).toBe(true);
    expect((await link.request({ op: Op.PING })).op).toBe(Op.OK);
    const failover = new FailoverLink({
      servers: [{ host: '127.0.0.1', port }],
      link: { tls: peerClientTls({ cert: pki.peer.cert, key: pki.peer.key, ca: pki.ca.cert }) },
      retryStrategy: () => null,
    });
    resources.add(() => failover.close());
    failover.start();
    await failover.whenReady(5000);
    expect((await failover.request({ op: Op.PING })).op).toBe(Op.OK);
    expect(verified).toEqual([false, true]);
  });

  it('readPeerTlsFiles reads cert, key and CA, and wants cert and key together', async () => {
    const tls = await readPeerTlsFiles({
      cert: pki.peer.certFile,
      key: pki.peer.keyFile,
      ca: pki.ca.certFile,
    });
    expect(tls?.cert).toEqual(pki.peer.cert);
    expect(await readPeerTlsFiles({})).toBeUndefined();
    await expect(readPeerTlsFiles({ ca: pki.ca.certFile })).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    await expect(readPeerTlsFiles({ cert: pki.peer.certFile })).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    await expect(readPeerTlsFiles({ cert: join(dir, 'nope'), key: pki.peer.keyFile })).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
  });
});
