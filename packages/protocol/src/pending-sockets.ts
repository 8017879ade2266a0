import type { Socket } from 'node:net';

/** A socket that has not authenticated (or finished its TLS handshake) yet, and where it comes from. */
export interface PendingSocket {
  readonly address: string;
  readonly socket: Socket;
}

/**
 * Sockets waiting to be admitted (to authenticate, or to finish their TLS handshake), oldest
 * first, counted per source address, with the one rule for making room for a new one: the oldest
 * (of an address, when that address is at its cap) that has sent nothing yet, else the oldest. A
 * socket that has spoken is in the middle of its handshake and is kept while silent ones can go.
 * Used by the server for its unauthenticated connections and by its TLS gate.
 */
export class PendingSockets<K, E extends PendingSocket> {
  private readonly entries = new Map<K, E>();
  private readonly perAddress = new Map<string, number>();

  /** Sockets pending now. */
  get size(): number {
    return this.entries.size;
  }

  /** Sockets pending now from `address`. */
  countFrom(address: string): number {
    return this.perAddress.get(address) ?? 0;
  }

  /** The entry of a pending socket; undefined once it is not pending. */
  get(key: K): E | undefined {
    return this.entries.get(key);
  }

  /** Adds a socket, the newest. */
  add(key: K, entry: E): void {
    this.entries.set(key, entry);
    this.perAddress.set(entry.address, this.countFrom(entry.address) + 1);
  }

  /** Forgets a socket (admitted, closed or evicted); its entry, when it was pending. */
  delete(key: K): E | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.entries.delete(key);
    const left = this.countFrom(entry.address) - 1;
    if (left > 0) this.perAddress.set(entry.address, left);
    else this.perAddress.delete(entry.address);
    return entry;
  }

  /** Forgets every socket. */
  clear(): void {
    this.entries.clear();
    this.perAddress.clear();
  }

  /** Oldest first. */
  [Symbol.iterator](): IterableIterator<[K, E]> {
    return this.entries[Symbol.iterator]();
  }

  /**
   * Which socket makes room for a new one (see the class), of `address` when given; `silent` says
   * whether it had sent nothing. Undefined when there is none.
   */
  toEvict(address: string | undefined): { readonly key: K; readonly silent: boolean } | undefined {
    let oldest: K | undefined;
    for (const [key, entry] of this.entries) {
      if (address !== undefined && entry.address !== address) continue;
      if (entry.socket.bytesRead === 0) return { key, silent: true };
      oldest ??= key;
    }
    return oldest === undefined ? undefined : { key: oldest, silent: false };
  }
}
