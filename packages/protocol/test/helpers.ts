import type { AddressInfo, Socket } from 'node:net';
import { afterAll, afterEach, beforeAll } from 'vitest';
import {
  Connection,
  type ConnectionOptions,
  connectSocket,
  FrameServer,
  type FrameServerOptions,
} from '../src/index.js';

/** Fails the suite on any uncaught exception or unhandled rejection seen while it runs. */
export function failOnUncaught(): void {
  const seen: unknown[] = [];
  const record = (error: unknown) => seen.push(error);
  beforeAll(() => {
    process.on('uncaughtException', record);
    process.on('unhandledRejection', record);
  });
  afterEach(() => {
    if (seen.length > 0) {
      const errors = seen.splice(0);
      throw new Error(`uncaught during test: ${errors.map(String).join('; ')}`);
    }
  });
  afterAll(() => {
    process.off('uncaughtException', record);
    process.off('unhandledRejection', record);
  });
}

/** Everything a test opened, closed in afterEach even when the test failed. */
export class Resources {
  private readonly closers: (() => Promise<void> | void)[] = [];

  add(close: () => Promise<void> | void): void {
    this.closers.push(close);
  }

  async closeAll(): Promise<void> {
    const closers = this.closers.splice(0).reverse();
    for (const close of closers) {
      try {
        await close();
      } catch {
        // Cleanup must go on.
      }
    }
  }

  async server(options: FrameServerOptions): Promise<{ server: FrameServer; address: AddressInfo }> {
    const server = new FrameServer(options);
    this.add(() => server.close(200));
    const address = await server.listen();
    return { server, address };
  }

  async socket(port: number): Promise<Socket> {
    const socket = await connectSocket({ host: '127.0.0.1', port });
    socket.on('error', () => undefined);
    this.add(() => {
      socket.destroy();
    });
    return socket;
  }

  async connection(port: number, options: ConnectionOptions = {}): Promise<Connection> {
    const socket = await connectSocket({ host: '127.0.0.1', port });
    const connection = new Connection(socket, options);
    this.add(() => connection.destroy());
    return connection;
  }
}

/** Resolves after `ms` (for letting the peer react; never used as a timing assertion). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` until it holds, failing after `timeoutMs`. */
export async function waitFor(condition: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

export { seededRandom } from '../src/testing.js';
