import { DeadlineSweeper, type Sweepable } from './deadline-sweeper.js';

/** Default bytes waiting to be written to clients, summed over every client connection of a process. */
export const DEFAULT_CLIENT_OUTPUT_BUDGET_BYTES = 1024 * 1024 * 1024;
/** How often the sum is taken (one timer per budget, never one per connection or per write). */
const CHECK_INTERVAL_MS = 100;

/** A client connection as the budget sees it: what it has waiting, and how to drop it. */
export interface BudgetedConnection {
  readonly bufferedOutputBytes: number;
  destroy(): void;
}

/** A server whose client connections the budget bounds (a `ConnectionServer`). */
export interface BudgetedServer {
  readonly clientConnections: ReadonlySet<BudgetedConnection>;
}

/** Options of a {@link ClientOutputBudget}. */
export interface ClientOutputBudgetOptions {
  /** Most bytes waiting to be written to clients, all connections of every watched server together. */
  readonly maxBytes?: number;
  /** Told of each connection dropped, with what it had waiting and the sum before. */
  readonly onEvict?: (bytes: number, totalBytes: number) => void;
}

/**
 * Bounds the memory a process spends on answers its clients have not read, across all its
 * client connections (the native port's and the RESP port's), as Redis's `maxmemory-clients`:
 * each connection already has an output bound of its own (reading pauses at half, the client is
 * dropped past it), but a thousand slow readers each at their bound hold a thousand times it.
 * Every {@link CHECK_INTERVAL_MS} ms the bytes waiting are summed; while the sum is over
 * `maxBytes`, the connection holding the most is dropped (a client that reads its answers never
 * holds many). Peers (balancers and nodes) are never counted or dropped.
 */
export class ClientOutputBudget implements Sweepable {
  readonly maxBytes: number;
  /** Client connections dropped to keep the sum under `maxBytes`, since start. */
  evictions = 0;
  private readonly servers = new Set<BudgetedServer>();
  private readonly sweeper = new DeadlineSweeper(CHECK_INTERVAL_MS);

  constructor(private readonly options: ClientOutputBudgetOptions = {}) {
    this.maxBytes = options.maxBytes ?? DEFAULT_CLIENT_OUTPUT_BUDGET_BYTES;
  }

  /** Bytes waiting to be written to the watched servers' clients now. */
  get bytes(): number {
    let total = 0;
    for (const server of this.servers)
      for (const connection of server.clientConnections) total += connection.bufferedOutputBytes;
    return total;
  }

  /** Counts `server`'s client connections until {@link unwatch}; the checks run while any server is watched. */
  watch(server: BudgetedServer): void {
    this.servers.add(server);
    this.sweeper.add(this);
  }

  /** Stops counting `server` (it is closing). */
  unwatch(server: BudgetedServer): void {
    this.servers.delete(server);
    if (this.servers.size === 0) this.sweeper.delete(this);
  }

  /** The sweeper's call: {@link check}. */
  sweep(): void {
    this.check();
  }

  /** Drops the connections holding the most until the sum is within `maxBytes`. */
  check(): void {
    let total = this.bytes;
    // A dropped connection leaves its server's set when its socket has closed, a turn later.
    const dropped = new Set<BudgetedConnection>();
    while (total > this.maxBytes) {
      const largest = this.largest(dropped);
      if (largest === undefined || largest.bufferedOutputBytes === 0) return;
      const bytes = largest.bufferedOutputBytes;
      this.options.onEvict?.(bytes, total);
      this.evictions++;
      dropped.add(largest);
      largest.destroy();
      total -= bytes;
    }
  }

  private largest(skip: ReadonlySet<BudgetedConnection>): BudgetedConnection | undefined {
    let largest: BudgetedConnection | undefined;
    for (const server of this.servers)
      for (const connection of server.clientConnections) {
        if (skip.has(connection)) continue;
        if (largest === undefined || connection.bufferedOutputBytes > largest.bufferedOutputBytes)
          largest = connection;
      }
    return largest;
  }
}
