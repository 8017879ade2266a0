import type { Socket } from 'node:net';

/** A socket that has not authenticated (or finished its TLS handshake) yet, and where it comes from. */
export interface PendingSocket {
  readonly address: string;
  readonly socket: Socket;
}

/**
 * Which pending socket makes room for a new one (the one rule of the server's pending
 * connections and of its TLS gate): among `pending` (oldest first), of `address` when given, the
 * oldest that has sent nothing yet, else the oldest; `silent` says which kind it is. A socket that
 * has spoken is in the middle of its handshake and is kept while silent ones can go.
 */
export function pendingToEvict<K, E extends PendingSocket>(
  pending: ReadonlyMap<K, E>,
  address: string | undefined,
): { readonly key: K; readonly silent: boolean } | undefined {
  let oldest: K | undefined;
  for (const [key, entry] of pending) {
    if (address !== undefined && entry.address !== address) continue;
    if (entry.socket.bytesRead === 0) return { key, silent: true };
    oldest ??= key;
  }
  return oldest === undefined ? undefined : { key: oldest, silent: false };
}
