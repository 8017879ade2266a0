import type { Socket } from 'node:net';
import { Connection, type ConnectionOptions } from './connection.js';
import {
  ConnectionServer,
  type ConnectionServerEvents,
  type ConnectionServerOptions,
} from './connection-server.js';
import { ErrorCode } from './errors.js';
import { Op, type Request } from './messages.js';

/** Options of a {@link FrameServer}. */
export interface FrameServerOptions extends ConnectionServerOptions {
  /** Options of every accepted {@link Connection}. `onRequest` is set by the server. */
  readonly connection?: Omit<ConnectionOptions, 'onRequest'>;
  /** Handles each request of each connection. */
  readonly onRequest: (request: Request, connection: Connection) => void;
}

/** Events of a {@link FrameServer}. */
export type FrameServerEvents = ConnectionServerEvents<Connection>;

/**
 * A TCP server whose every connection is a {@link Connection}: the one listener used by storage
 * nodes and the balancer. Caps, deadlines, TLS and graceful stop are {@link ConnectionServer}'s.
 */
export class FrameServer extends ConnectionServer<Connection> {
  constructor(private readonly frameOptions: FrameServerOptions) {
    super(frameOptions);
  }

  protected wrap(socket: Socket): Connection {
    return new Connection(socket, {
      ...this.frameOptions.connection,
      onRequest: this.frameOptions.onRequest,
    });
  }

  /** Graceful, then SHUTTING_DOWN (id 0): what the peer sent across the end was not executed. */
  protected override shutDown(connection: Connection): Promise<void> {
    return connection.shutDown();
  }

  protected tellEvicted(connection: Connection, reason: string): void {
    connection.send({ op: Op.ERROR, id: 0, code: ErrorCode.UNAUTHORIZED, message: reason });
  }

  /** Sends one connection-level ERROR (id 0) and closes, never waiting more than a second. */
  protected refuse(socket: Socket, code: ErrorCode, message: string): void {
    socket.on('error', () => undefined);
    const connection = new Connection(socket);
    connection.send({ op: Op.ERROR, id: 0, code, message });
    void connection.close();
    // Read on (a sniffed socket is paused) so the peer's own close is seen and ends it early.
    socket.resume();
    setTimeout(() => connection.destroy(), 1000).unref();
  }
}
