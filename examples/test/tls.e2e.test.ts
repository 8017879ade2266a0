/**
 * TLS on every hop, end to end with real processes: a balancer and 3 nodes started with
 * `--tls-cert/--tls-key/--tls-ca`, driven through @dstore/client (`dstores://`) and the `dstore`
 * CLI; a 4th node joins and a node leaves, so keys migrate node to node over TLS. Plaintext and
 * wrong-CA clients get typed errors, and a node whose certificate the cluster CA did not sign
 * cannot JOIN.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type DstoreClient } from '@dstore/client';
import { type DstoreError, ErrorCode, Op, PeerLink, TLS_REQUIRED_MESSAGE } from '@dstore/protocol';
import { createTestPki, type TestPki } from '@dstore/protocol/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  adminJson,
  type ClusterProcess,
  type ClusterState,
  cliPath,
  isOurProcess,
  sleep,
  startCluster,
  startNode,
  stopCluster,
  waitForRing,
} from '../src/cluster.js';

const KEY_COUNT = 2000;
let root: string;
let pki: TestPki;
let state: ClusterState;
let client: DstoreClient;
/** Nodes started outside the recorded cluster (the joiner); stopped in afterAll too. */
const extra: ClusterProcess[] = [];

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'dstore-tls-e2e-'));
  pki = createTestPki(join(root, 'pki'));
  state = await startCluster({
    root,
    engine: 'memory',
    tls: { cert: pki.peer.certFile, key: pki.peer.keyFile, ca: pki.ca.certFile },
  });
  client = createClient(`dstores://${state.balancer.host}:${state.balancer.port}`, {
    tls: { ca: pki.ca.cert },
  });
}, 60_000);

afterAll(async () => {
  await client?.close().catch(() => undefined);
  for (const proc of extra) if (isOurProcess(proc.pid)) process.kill(proc.pid, 'SIGKILL');
  const stopped = root ? await stopCluster(root) : [];
  rmSync(root, { recursive: true, force: true });
  for (const proc of stopped) expect(isOurProcess(proc.pid)).toBe(false);
}, 60_000);

function dstore(...args: string[]): { stdout: string; stderr: string; status: number | null } {
  const result = spawnSync(process.execPath, [cliPath('@dstore/client'), ...args], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { stdout: result.stdout, stderr: result.stderr, status: result.status };
}

const value = (i: number): string => `tls-value-${i}`;

async function expectEveryKey(): Promise<void> {
  for (let start = 0; start < KEY_COUNT; start += 500) {
    const keys = Array.from({ length: Math.min(500, KEY_COUNT - start) }, (_, j) => `tls:${start + j}`);
    const values = await Promise.all(keys.map((key) => client.getString(key)));
    values.forEach((got, j) => {
      expect(got).toBe(value(start + j));
    });
  }
}

async function waitForExit(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (isOurProcess(pid) && Date.now() < deadline) await sleep(50);
  expect(isOurProcess(pid)).toBe(false);
}

describe('a TLS cluster', () => {
  it('serves dstores:// clients, keeps every key through a join and a leave (migration over TLS)', async () => {
    for (let start = 0; start < KEY_COUNT; start += 500) {
      await Promise.all(
        Array.from({ length: 500 }, (_, j) => client.set(`tls:${start + j}`, value(start + j))),
      );
    }
    await expectEveryKey();

    const joiner = await startNode(state, 'node-4');
    extra.push(joiner);
    await waitForRing(state, 30_000, 4);
    await expectEveryKey();

    // A graceful stop is a LEAVE: the node exits once its keys moved to their new owners.
    const leaver = state.nodes[0]!;
    process.kill(leaver.pid, 'SIGTERM');
    await waitForExit(leaver.pid, 30_000);
    await expectEveryKey();
    const ring = await adminJson<{ nodes: { id: string }[] }>(state, '/ring');
    expect(ring.nodes.map((node) => node.id).sort()).toEqual(['node-2', 'node-3', 'node-4']);
  }, 90_000);

  it('the dstore CLI speaks TLS with --tls-ca and dstores://', () => {
    const server = `dstores://${state.balancer.host}:${state.balancer.port}`;
    const set = dstore('set', 'cli:tls', 'over-tls', '--server', server, '--tls-ca', pki.ca.certFile);
    expect(set.stderr).toBe('');
    expect(set.status).toBe(0);
    // --tls-ca alone implies TLS, whatever the scheme.
    const get = dstore(
      'get',
      'cli:tls',
      '--server',
      `${state.balancer.host}:${state.balancer.port}`,
      '--tls-ca',
      pki.ca.certFile,
    );
    expect(get.stdout.trim()).toBe('over-tls');
    expect(get.status).toBe(0);
  });

  it('answers a plaintext client with TLS_REQUIRED at once', async () => {
    const cli = dstore('get', 'cli:tls', '--server', `${state.balancer.host}:${state.balancer.port}`);
    expect(cli.status).toBe(2);
    expect(cli.stderr).toContain(`error TLS_REQUIRED: ${TLS_REQUIRED_MESSAGE}`);

    const plain = createClient({
      host: state.balancer.host,
      port: state.balancer.port,
      lazyConnect: true,
      retryStrategy: () => null,
    });
    try {
      const failure = await plain.connect().catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(Error);
      expect(((failure as Error).cause as DstoreError).code).toBe(ErrorCode.TLS_REQUIRED);
    } finally {
      await plain.disconnect();
    }
  });

  it('fails a client that trusts another CA with a typed error, not a hang', async () => {
    const wrong = createClient(`dstores://${state.balancer.host}:${state.balancer.port}`, {
      tls: { ca: pki.rogueCa.cert },
      lazyConnect: true,
      retryStrategy: () => null,
    });
    try {
      const failure = await wrong.connect().catch((error: unknown) => error);
      const cause = (failure as Error).cause as DstoreError;
      expect(cause.code).toBe(ErrorCode.UNAVAILABLE);
      expect(cause.message).toMatch(/certificate/);
    } finally {
      await wrong.disconnect();
    }
    const cli = dstore(
      'get',
      'x',
      '--server',
      `dstores://${state.balancer.host}:${state.balancer.port}`,
      '--tls-ca',
      pki.rogueCa.certFile,
    );
    expect(cli.status).toBe(2);
    expect(cli.stderr).toMatch(/error UNAVAILABLE: TLS connection .* failed/);
  });

  it('refuses the JOIN of a node whose certificate the cluster CA did not sign', async () => {
    // It trusts the balancer (right CA) but presents a certificate from another CA.
    const rogue = new PeerLink({
      host: state.balancer.host,
      port: state.balancer.port,
      role: 'node',
      tls: { ca: pki.ca.cert, cert: pki.rogue.cert, key: pki.rogue.key },
    });
    // The TLS handshake succeeds (it verified the balancer); its HELLO as a node is refused, so
    // the link never becomes ready and no JOIN can be sent.
    const refused = new Promise<Error>((resolve) => rogue.once('error', resolve));
    rogue.start();
    try {
      const failure = await refused;
      expect((failure as DstoreError).code).toBe(ErrorCode.UNAUTHORIZED);
      expect((failure as DstoreError).message).toMatch(/cluster CA/);
      expect(rogue.isReady).toBe(false);
      await expect(
        rogue.request({ op: Op.JOIN, nodeId: 'rogue', host: '127.0.0.1', port: 1, weight: 1 }),
      ).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
    } finally {
      await rogue.close();
    }
    const ring = await adminJson<{ nodes: { id: string }[] }>(state, '/ring');
    expect(ring.nodes.map((node) => node.id)).not.toContain('rogue');
  });
});
