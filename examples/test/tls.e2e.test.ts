/**
 * A secured cluster end to end with real processes: TLS on every hop (`--tls-cert/--tls-key/
 * --tls-ca`), a cluster secret on every balancer and node, users on the balancer (a read-write and
 * a read-only one) and an admin token; driven through @dstore/client (`dstores://` with a user) and
 * the `dstore` CLI (`--user/--password`, `status` over HTTPS with `--admin-token`); a 4th node
 * joins and a node leaves. Replication factor 3: every write is forwarded down its chain (REPLICATE)
 * and the join and leave copy ranges to their learners (MIGRATE), node to node over TLS between
 * authenticated peers; the test checks every key ends on 3 nodes.
 * Plaintext, wrong-CA and wrong-password clients get typed errors, and a node whose certificate
 * the cluster CA did not sign cannot join.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type DstoreClient } from '@dstore/client';
import {
  type DstoreError,
  ErrorCode,
  hashPassword,
  Op,
  PeerLink,
  TLS_REQUIRED_MESSAGE,
} from '@dstore/protocol';
import { createTestPki, type TestPki } from '@dstore/protocol/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  adminJson,
  type CliRun,
  type ClusterProcess,
  type ClusterState,
  isOurProcess,
  runDstore,
  sleep,
  startCluster,
  startNode,
  stopCluster,
  waitForRing,
} from '../src/cluster.js';

const KEY_COUNT = 2000;
const SECRET = 'e2e-cluster-secret-0123456789abcdef';
const ADMIN_TOKEN = 'e2e-admin-token';
const WRITER = { user: 'app', password: 'app-password' };
const READER = { user: 'viewer', password: 'viewer-password' };
let root: string;
let pki: TestPki;
let state: ClusterState;
let client: DstoreClient;
/** Nodes started outside the recorded cluster (the joiner); stopped in afterAll too. */
const extra: ClusterProcess[] = [];

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'dstore-tls-e2e-'));
  pki = createTestPki(join(root, 'pki'));
  const usersFile = join(root, 'users.json');
  const users = [
    { name: WRITER.user, password: await hashPassword(WRITER.password) },
    { name: READER.user, password: await hashPassword(READER.password), access: 'read' },
  ];
  writeFileSync(usersFile, JSON.stringify({ users }));
  state = await startCluster({
    root,
    engine: 'memory',
    // Factor 3: writes travel their chains and the join and leave copy ranges, all over TLS.
    replicationFactor: 3,
    tls: { cert: pki.peer.certFile, key: pki.peer.keyFile, ca: pki.ca.certFile },
    auth: { clusterSecret: SECRET, usersFile, adminToken: ADMIN_TOKEN },
  });
  client = createClient(`dstores://${state.balancer.host}:${state.balancer.port}`, {
    tls: { ca: pki.ca.cert },
    ...WRITER,
  });
}, 60_000);

afterAll(async () => {
  await client?.close().catch(() => undefined);
  for (const proc of extra) if (isOurProcess(proc.pid)) process.kill(proc.pid, 'SIGKILL');
  // No grace for the nodes (SIGKILL at once; the balancer still gets its 2 s): the last of them
  // cannot LEAVE (no member left to take its ranges; --leave-timeout is 60 s), so the default 10 s
  // grace ended in a SIGKILL anyway. A graceful LEAVE is tested above, by node-1.
  const stopped = root ? await stopCluster(root, 0) : [];
  rmSync(root, { recursive: true, force: true });
  for (const proc of stopped) expect(isOurProcess(proc.pid)).toBe(false);
}, 60_000);

function dstore(...args: string[]): CliRun {
  return runDstore(args, 30_000);
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

/** The parts of `/ring` the copies are checked on. */
interface RingCopies {
  readonly nodes: readonly { readonly id: string; readonly keys: number; readonly replicaState: string }[];
  readonly replication: { readonly factor: number; readonly underReplicatedRanges: number };
}

/** Waits until each of `nodes` members is `up` and reports `keys` keys, with no range under-replicated. */
async function waitForCopies(keys: number, nodes: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  let ring: RingCopies | undefined;
  for (;;) {
    ring = await adminJson<RingCopies>(state, '/ring');
    const copied =
      ring.replication.factor === 3 &&
      ring.replication.underReplicatedRanges === 0 &&
      ring.nodes.length === nodes &&
      ring.nodes.every((node) => node.keys === keys && node.replicaState === 'up');
    if (copied) return;
    if (Date.now() > deadline) break;
    await sleep(100);
  }
  expect(ring?.nodes).toEqual(
    Array.from({ length: nodes }, () => expect.objectContaining({ keys, replicaState: 'up' })),
  );
  expect(ring?.replication).toMatchObject({ factor: 3, underReplicatedRanges: 0 });
}

async function waitForExit(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (isOurProcess(pid) && Date.now() < deadline) await sleep(50);
  expect(isOurProcess(pid)).toBe(false);
}

describe('a TLS cluster', () => {
  it('serves dstores:// clients, keeps every key on 3 nodes through a join and a leave (replication over TLS)', async () => {
    for (let start = 0; start < KEY_COUNT; start += 500) {
      await Promise.all(
        Array.from({ length: 500 }, (_, j) => client.set(`tls:${start + j}`, value(start + j))),
      );
    }
    await expectEveryKey();
    await waitForCopies(KEY_COUNT, 3);

    const joiner = await startNode(state, 'node-4');
    extra.push(joiner);
    await waitForRing(state, 30_000, 4);
    await expectEveryKey();

    // A graceful stop is a LEAVE: the node exits once its keys moved to their new owners.
    const leaver = state.nodes[0]!;
    process.kill(leaver.pid, 'SIGTERM');
    await waitForExit(leaver.pid, 30_000);
    await expectEveryKey();
    const ring = await adminJson<RingCopies>(state, '/ring');
    expect(ring.nodes.map((node) => node.id).sort()).toEqual(['node-2', 'node-3', 'node-4']);
    // Three nodes, factor 3: every node holds every key (its heartbeat's count), copied to node-4
    // and forwarded down the chains over TLS peer links; no range is short of a copy.
    await waitForCopies(KEY_COUNT, 3);
  }, 90_000);

  it('routes directly to the nodes over TLS, as a user, and refuses what the user may not do', async () => {
    const direct = createClient(`dstores://${state.balancer.host}:${state.balancer.port}`, {
      tls: { ca: pki.ca.cert },
      ...WRITER,
      routing: 'direct',
    });
    const reader = createClient(`dstores://${state.balancer.host}:${state.balancer.port}`, {
      tls: { ca: pki.ca.cert },
      ...READER,
      routing: 'direct',
    });
    try {
      const linked = (c: DstoreClient) => {
        const stats = c.routingStats;
        return (
          stats !== undefined && stats.mapEpoch >= 0 && stats.nodes > 0 && stats.nodesReady === stats.nodes
        );
      };
      for (let waited = 0; !(linked(direct) && linked(reader)); waited += 20) {
        if (waited > 15_000) throw new Error('direct clients never connected to every node');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      for (let i = 0; i < 50; i++) await direct.set(`tls-direct:${i}`, `v${i}`);
      for (let i = 0; i < 50; i++) expect(await reader.getString(`tls-direct:${i}`)).toBe(`v${i}`);
      expect(direct.routingStats!.direct).toBeGreaterThanOrEqual(50);
      expect(reader.routingStats!.direct).toBeGreaterThanOrEqual(50);
      expect(direct.routingStats!.viaBalancer).toBe(0);
      // The node checks the user's grant as the balancer does: a read-only user cannot write.
      await expect(reader.set('tls-direct:0', 'x')).rejects.toMatchObject({ code: 'NO_PERMISSION' });
      expect(await direct.getString('tls-direct:0')).toBe('v0');
    } finally {
      await Promise.all([direct.close(), reader.close()]);
    }
  });

  it('the dstore CLI speaks TLS with --tls-ca and dstores://, as a user', () => {
    const server = `dstores://${state.balancer.host}:${state.balancer.port}`;
    const asWriter = ['--user', WRITER.user, '--password', WRITER.password];
    const set = dstore(
      'set',
      'cli:tls',
      'over-tls',
      '--server',
      server,
      '--tls-ca',
      pki.ca.certFile,
      ...asWriter,
    );
    expect(set.stderr).toBe('');
    expect(set.status).toBe(0);
    // --tls-ca alone implies TLS, whatever the scheme; the user can come in the URL too.
    const get = dstore(
      'get',
      'cli:tls',
      '--server',
      `dstore://${READER.user}:${READER.password}@${state.balancer.host}:${state.balancer.port}`,
      '--tls-ca',
      pki.ca.certFile,
    );
    expect(get.stdout.trim()).toBe('over-tls');
    expect(get.status).toBe(0);
    // The read-only user may not write; a wrong password is refused; nobody gets in anonymously.
    const asReader = ['--user', READER.user, '--password', READER.password];
    const write = dstore('set', 'cli:tls', 'x', '--server', server, '--tls-ca', pki.ca.certFile, ...asReader);
    expect(write.stderr).toMatch(/error NO_PERMISSION: user 'viewer' is read-only/);
    expect(write.status).toBe(1);
    const wrong = dstore(
      'get',
      'cli:tls',
      '--server',
      server,
      '--tls-ca',
      pki.ca.certFile,
      '--user',
      'app',
      '--password',
      'nope',
    );
    expect(wrong.stderr).toMatch(/invalid user or password/);
    expect(wrong.status).toBe(1);
    const anonymous = dstore('get', 'cli:tls', '--server', server, '--tls-ca', pki.ca.certFile);
    expect(anonymous.stderr).toMatch(/authentication required/);
    expect(anonymous.status).toBe(1);
  });

  it('dstore status reads the HTTPS admin port; node removal needs the admin token', () => {
    const admin = `${state.balancer.host}:${state.balancer.adminPort}`;
    const status = dstore('status', '--admin', admin, '--tls-ca', pki.ca.certFile, '--json');
    expect(status.stderr).toBe('');
    const parsed = JSON.parse(status.stdout) as { ring: { nodes: { id: string }[] }; healthy: boolean };
    expect(parsed.ring.nodes.length).toBeGreaterThanOrEqual(3);
    expect(parsed.healthy).toBe(true);
    const refused = dstore('node', 'remove', 'node-2', '--admin', admin, '--tls-ca', pki.ca.certFile);
    expect(refused.stderr).toMatch(/UNAUTHORIZED/);
    expect(refused.status).toBe(1);
    const wrongToken = dstore(
      'node',
      'remove',
      'node-2',
      '--admin',
      admin,
      '--tls-ca',
      pki.ca.certFile,
      '--admin-token',
      'guess',
    );
    expect(wrongToken.stderr).toMatch(/UNAUTHORIZED/);
    expect(wrongToken.status).toBe(1);
    // With the token the request is authorized: an unknown node is the answer, not a refusal.
    const unknown = dstore(
      'node',
      'remove',
      'nope',
      '--admin',
      admin,
      '--tls-ca',
      pki.ca.certFile,
      '--admin-token',
      ADMIN_TOKEN,
    );
    expect(unknown.stderr).toMatch(/no node 'nope' in the ring/);
  });

  it('answers a plaintext client with TLS_REQUIRED at once', async () => {
    const cli = dstore('get', 'cli:tls', '--server', `${state.balancer.host}:${state.balancer.port}`);
    expect(cli.stderr).toContain(TLS_REQUIRED_MESSAGE);
    expect(cli.status).toBe(1);

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
      // Typed: UNAVAILABLE, not executed, with the TLS verification failure as its cause.
      expect((failure as DstoreError).code).toBe(ErrorCode.UNAVAILABLE);
      expect((failure as DstoreError).notExecuted).toBe(true);
      expect(String((failure as DstoreError).message)).toMatch(/certificate|SELF_SIGNED/i);
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
    expect(cli.stderr).toMatch(/error UNAVAILABLE: cannot connect to .*certificate/);
    expect(cli.status).toBe(1);
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
