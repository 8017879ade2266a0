import type { Socket } from 'node:net';
import { ErrorCode } from '@dstore/protocol';
import { ConnectionServer, type ConnectionServerOptions } from '@dstore/protocol/internal';
import { MAX_CLIENTS } from './auth.js';
import { RespConnection, type RespConnectionOptions } from './connection.js';
import { RespFrontDoor } from './front-door.js';
import type { RespServices } from './services.js';

/** Options of a {@link RespServer}. */
export interface RespServerOptions extends ConnectionServerOptions {
  /** Parser limits, in-flight and output bounds of every connection. */
  readonly connection: RespConnectionOptions;
}

/**
 * The RESP port of the balancer: the same listener as the native port ({@link ConnectionServer}:
 * connection caps, eviction of silent unauthenticated sockets, idle deadline, TLS), whose
 * connections speak RESP and run their commands through the {@link RespFrontDoor}.
 */
export class RespServer extends ConnectionServer<RespConnection> {
  private readonly frontDoor: RespFrontDoor;
  private nextId = 0;

  constructor(
    private readonly respOptions: RespServerOptions,
    services: Omit<RespServices, 'admit'>,
  ) {
    super(respOptions);
    this.frontDoor = new RespFrontDoor({
      ...services,
      admit: (connection) => this.admit(connection, 'client'),
    });
  }

  protected wrap(socket: Socket): RespConnection {
    return new RespConnection(socket, ++this.nextId, this.frontDoor, this.respOptions.connection);
  }

  protected tellEvicted(connection: RespConnection, reason: string): void {
    connection.refused(reason);
    void connection.close();
  }

  /** Answers `-ERR ...` (Redis's words when every slot is taken) and closes within a second. */
  protected refuse(socket: Socket, code: ErrorCode, message: string): void {
    socket.on('error', () => undefined);
    socket.end(`-${code === ErrorCode.BUSY ? MAX_CLIENTS : `ERR ${message}`}\r\n`);
    // Read on so the client's own close is seen and ends the socket early.
    socket.resume();
    setTimeout(() => socket.destroy(), 1000).unref();
  }
}
