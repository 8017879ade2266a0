import type { Server as HttpServer } from 'node:http';
import { type AddressInfo, createServer, type Server as NetServer, type Socket } from 'node:net';

/** A server listening on 127.0.0.1; `close` also ends its open sockets. */
export interface Listening {
  readonly port: number;
  /** `127.0.0.1:<port>`. */
  readonly address: string;
  close(): Promise<void>;
}

/** Listens on 127.0.0.1, port 0; `close` also ends the open sockets. */
export async function listen(server: NetServer | HttpServer): Promise<Listening> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const { port } = server.address() as AddressInfo;
  return {
    port,
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * A hung peer as the network sees it (a SIGSTOPped balancer): the kernel accepts connections, and
 * nothing is ever read or answered.
 */
export function listenMute(): Promise<Listening> {
  return listen(createServer(() => undefined));
}
