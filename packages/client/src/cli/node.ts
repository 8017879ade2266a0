import { parseAddress } from '@dstore/protocol/internal';
import type { Command } from 'commander';
import { DstoreError, ErrorCode } from '../errors.js';
import { DEFAULT_ADMIN, duration, printJson, printLine } from './shared.js';
import type { RingView } from './status.js';

interface RemoveOptions {
  readonly admin: string;
  readonly timeout: number;
  readonly json?: boolean;
}

/** How often `node remove` looks at /ring while the node's keys move. */
const POLL_MS = 200;

/** Registers `node remove <id>`: a graceful, operator-driven leave through the balancer's admin port. */
export function registerNodeCommands(program: Command): void {
  const node = program.command('node').description('manage ring membership through the balancer');
  node
    .command('remove <id>')
    .description(
      "move a node's keys to their new owners, then take it out of the ring (POST /nodes/<id>/remove)",
    )
    .option('--admin <host:port>', 'balancer admin HTTP address', DEFAULT_ADMIN)
    .option('--timeout <ms>', 'longest wait for the hand-off (ms, or 30s, 2m)', duration, 60_000)
    .option('--json', 'print the final /ring migration state as JSON')
    .exitOverride()
    .action(async (id: string, options: RemoveOptions) => {
      const { host, port } = parseAddress(options.admin, {
        defaultPort: 7380,
        defaultHost: '127.0.0.1',
        what: '--admin',
      });
      const base = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
      await requestRemoval(base, id);
      const ring = await waitUntilGone(base, id, options.timeout);
      if (options.json) printJson({ removed: id, epoch: ring.epoch, migration: ring.migration });
      else {
        const moved = ring.migration?.keysMoved ?? 0;
        printLine(`node ${id} removed at epoch ${ring.epoch} (${moved} keys moved by the last migration)`);
      }
    });
  node.exitOverride();
}

async function requestRemoval(base: string, id: string): Promise<void> {
  let response: Response;
  try {
    response = await fetch(`${base}/nodes/${encodeURIComponent(id)}/remove`, {
      method: 'POST',
      signal: AbortSignal.timeout(5000),
    });
  } catch (error) {
    throw new DstoreError(ErrorCode.UNAVAILABLE, `cannot reach the balancer admin at ${base}`, {
      cause: error,
    });
  }
  if (response.status === 404)
    throw new DstoreError(ErrorCode.INVALID_ARGUMENT, `no node '${id}' in the ring`);
  if (!response.ok) throw new DstoreError(ErrorCode.INTERNAL, `remove answered HTTP ${response.status}`);
}

async function waitUntilGone(base: string, id: string, timeoutMs: number): Promise<RingView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const response = await fetch(`${base}/ring`, { signal: AbortSignal.timeout(5000) });
    const ring = (await response.json()) as RingView;
    if (!ring.nodes.some((node) => node.id === id)) return ring;
    if (Date.now() > deadline) {
      throw new DstoreError(ErrorCode.TIMEOUT, `node ${id} still in the ring after ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
