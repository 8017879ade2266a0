import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { answerHello, Connection, Op, PeerLink } from '../src/index.js';

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

describe('smoke', () => {
  it('round-trips requests over a PeerLink', async () => {
    const store = new Map<string, Uint8Array>();
    server = createServer({ allowHalfOpen: true }, (socket) => {
      new Connection(socket, {
        onRequest: (request, connection) => {
          switch (request.op) {
            case Op.HELLO:
              return connection.reply(answerHello(connection, request, { role: 'node', serverId: 'n1' }));
            case Op.SET:
              store.set(Buffer.from(request.key).toString('latin1'), request.value.slice());
              setTimeout(() => connection.reply({ op: Op.OK, id: request.id }), Math.random() * 5);
              return;
            case Op.GET:
              return connection.reply({
                op: Op.VALUE,
                id: request.id,
                value: store.get(Buffer.from(request.key).toString('latin1')) ?? null,
              });
            default:
              return connection.replyError(request.id, 'UNKNOWN_OP', 'no');
          }
        },
      });
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const link = new PeerLink({ host: '127.0.0.1', port });
    const ready = new Promise((resolve) => link.once('ready', resolve));
    link.start();
    await ready;
    const enc = new TextEncoder();
    await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        link.request({ op: Op.SET, key: enc.encode(`k${i}`), value: enc.encode(`v${i}`) }),
      ),
    );
    const values = await Promise.all(
      Array.from({ length: 500 }, (_, i) => link.request({ op: Op.GET, key: enc.encode(`k${i}`) })),
    );
    values.forEach((response, i) => {
      expect(response.op).toBe(Op.VALUE);
      expect(Buffer.from((response as { value: Uint8Array }).value).toString()).toBe(`v${i}`);
    });
    await expect(link.request({ op: Op.PING })).rejects.toMatchObject({ code: 'UNKNOWN_OP' });
    await link.close();
  });
});
