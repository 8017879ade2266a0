import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DstoreError, Op, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import {
  attempt,
  BALANCER_CLI,
  type BalancerReady,
  balancerArgs,
  connect,
  Resources,
  spawnCli,
  spawnNode,
  startFakeNode,
  waitFor,
} from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

async function health(adminPort: number): Promise<{ ready: boolean; nodesUp: number }> {
  const response = await fetch(`http://127.0.0.1:${adminPort}/health`);
  return (await response.json()) as { ready: boolean; nodesUp: number };
}

describe('dstore-balancer CLI', () => {
  it('--help lists every flag and exits 0', () => {
    const result = spawnSync(process.execPath, [BALANCER_CLI, '--help'], { encoding: 'utf8' });
    expect(result.status).toBe(0);
    for (const flag of [
      '--host',
      '--port',
      '--admin-port',
      '--node',
      '--config',
      '--hash',
      '--hash-tag',
      '--request-timeout',
      '--heartbeat-timeout',
      '--max-connections',
      '--token',
      '--log-level',
      '--resp-port',
      '--resp-host',
      '--replication-factor',
    ]) {
      expect(result.stdout).toContain(flag);
    }
    // Deprecated: still accepted (replication-map.test.ts), no longer offered.
    expect(result.stdout).not.toContain('--experimental-replication');
  });

  it('refuses a bad flag value with exit code 2 (usage), and prints --version', () => {
    const result = spawnSync(process.execPath, [BALANCER_CLI, '--port', '0', '--hash', 'md5'], {
      encoding: 'utf8',
    });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('md5');
    for (const bad of [
      ['--port', '1e3'],
      ['--request-timeout', '2x'],
      ['--node', 'nohost'],
      ['--node', '=h:1'],
      ['--resp-port', '70000'],
      ['--port', '0', '--admin-port', '0', '--lease', '3000', '--failure-timeout', '5000'],
      ['--lease', '0'],
      ['--unknown-flag'],
    ]) {
      expect(
        spawnSync(process.execPath, [BALANCER_CLI, ...bad], { encoding: 'utf8' }).status,
        bad.join(' '),
      ).toBe(2);
    }
    const version = spawnSync(process.execPath, [BALANCER_CLI, '--version'], { encoding: 'utf8' });
    expect(version.status).toBe(0);
    expect(version.stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
  });

  it('prints the ready line, routes to joined real nodes, and exits 0 on SIGTERM', async () => {
    const balancer = await spawnCli<BalancerReady>(
      resources,
      BALANCER_CLI,
      balancerArgs([
        '--hash-tag',
        'none',
        // Durations and sizes read as the node's flags read them (the shared parsers).
        '--client-idle-timeout',
        '5m',
        '--auth-timeout',
        '5s',
        '--max-client-bytes-in-flight',
        '4m',
      ]),
    );
    expect(balancer.ready).toEqual({
      event: 'ready',
      service: 'dstore-balancer',
      host: '127.0.0.1',
      port: expect.any(Number),
      adminPort: expect.any(Number),
    });
    await spawnNode(resources, 'cli-node-1', balancer.ready.port);
    await waitFor(async () => (await health(balancer.ready.adminPort)).ready, 'ready');
    const client = await connect(resources, balancer.ready.port);
    // Up once it joined; until its first RING arrives the node refuses (UNAVAILABLE, not executed,
    // which a client resends): this connection sends again as a client would.
    let stored: unknown;
    await waitFor(async () => {
      stored = await client
        .request({ op: Op.SET, key: toBytes('a'), value: toBytes('1') })
        .catch((error: unknown) => {
          if (error instanceof DstoreError && error.notExecuted && error.retryable) return undefined;
          throw error;
        });
      return stored !== undefined;
    }, 'a SET stored');
    expect(stored).toMatchObject({ op: Op.OK });
    const stats = await client.request({ op: Op.STATS });
    expect(stats).toMatchObject({
      op: Op.STATS_RESULT,
      stats: { role: 'balancer', hash_tag: 'none', 'node.cli-node-1.keys': 1 },
    });
    balancer.child.kill('SIGTERM');
    expect(await balancer.exited).toBe(0);
  });

  it('drains requests in flight on SIGTERM before exiting 0 (static node from --config)', async () => {
    const node = await startFakeNode(resources, 'slow-node');
    const dir = mkdtempSync(join(tmpdir(), 'dstore-balancer-'));
    resources.add(() => rmSync(dir, { recursive: true, force: true }));
    const config = join(dir, 'cluster.json');
    writeFileSync(
      config,
      JSON.stringify({ nodes: [{ id: 'slow-node', host: '127.0.0.1', port: node.port, weight: 1 }] }),
    );
    const balancer = await spawnCli<BalancerReady>(
      resources,
      BALANCER_CLI,
      balancerArgs(['--config', config, '--request-timeout', '10000', '--log-level', 'info']),
    );
    await waitFor(async () => (await health(balancer.ready.adminPort)).ready, 'ready');
    const client = await connect(resources, balancer.ready.port);
    node.stalled = true;
    const pending = Array.from({ length: 20 }, (_, index) =>
      attempt(client, { op: Op.SET, key: toBytes(`d${index}`), value: toBytes('v') }),
    );
    await waitFor(
      () => node.received.filter((request) => request.op === Op.SET).length === 20,
      'requests at the node',
    );
    balancer.child.kill('SIGTERM');
    // Once shutdown has begun, the node answers: every held request must still reach the client.
    await waitFor(() => balancer.stderr().includes('balancer stopping'), 'shutdown to begin');
    node.releaseHeld();
    const results = await Promise.all(pending);
    for (const result of results) expect(result).toMatchObject({ op: Op.OK });
    expect(await balancer.exited).toBe(0);
    expect(node.store.size).toBe(20);
  });

  it('serves Redis clients on --resp-port and names the port in the ready line', async () => {
    const balancer = await spawnCli<BalancerReady & { respPort: number }>(
      resources,
      BALANCER_CLI,
      balancerArgs(['--resp-port', '0', '--log-level', 'warn']),
    );
    expect(balancer.ready.respPort).toBeGreaterThan(0);
    const ping = spawnSync('redis-cli', ['-p', String(balancer.ready.respPort), 'PING'], {
      encoding: 'utf8',
    });
    expect(ping.stdout.trim()).toBe('PONG');
  });
});
