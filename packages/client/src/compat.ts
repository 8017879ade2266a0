import type { BinaryLike } from '@dstore/protocol';
import { createClient, type DstoreClient } from './client.js';

/** The address the default client uses when `DSTORE_URL` is not set. */
export const DEFAULT_DSTORE_URL = 'dstore://127.0.0.1:7379';

let defaultClient: DstoreClient | undefined;

/**
 * The process-wide client behind {@link dset} and {@link dget}, created on first use from the
 * `DSTORE_URL` environment variable (default `dstore://127.0.0.1:7379`).
 */
export function getDefaultClient(): DstoreClient {
  defaultClient ??= createClient(process.env.DSTORE_URL || DEFAULT_DSTORE_URL);
  return defaultClient;
}

/** The original DStore call: stores `value` (a string is stored as UTF-8) under `key`. */
export async function dset(key: BinaryLike, value: BinaryLike): Promise<void> {
  await getDefaultClient().set(key, value);
}

/** The original DStore call: the value of `key` as a UTF-8 string, or null when missing. */
export function dget(key: BinaryLike): Promise<string | null> {
  return getDefaultClient().getString(key);
}

/**
 * Closes the default client (gracefully) so the process can exit; the next dset/dget creates a
 * new one, reading `DSTORE_URL` again.
 */
export async function closeDefaultClient(): Promise<void> {
  const client = defaultClient;
  defaultClient = undefined;
  if (client) await client.close();
}
