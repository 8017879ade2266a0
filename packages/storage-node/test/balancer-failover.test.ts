import { ErrorCode, Op } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveNodeOptions } from '../src/options.js';
import { FakeBalancer } from './fake-balancer.js';
import { capturingLogger, Resources, waitFor } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

/** A started fake balancer and its `host:port`. */
async function startBalancer(port = 0): Promise<{ balancer: FakeBalancer; address: string }> {
  const balancer = new FakeBalancer(resources);
  const bound = await balancer.start(port);
  return { balancer, address: `127.0.0.1:${bound}` };
}

/** The address of a balancer that was started and stopped: its port refuses connections. */
async function unreachableAddress(): Promise<string> {
  const { balancer, address } = await startBalancer();
  await balancer.stop();
  return address;
}

const portOf = (address: string): number => Number(address.split(':')[1]);

describe('several balancers', () => {
  it('registers with the first, fails over to the second (JOIN, heartbeats), LEAVEs the connected one', async () => {
    const first = await startBalancer();
    const second = await startBalancer();
    const { logger, records } = capturingLogger();
    const node = await resources.node({
      id: 'failover-1',
      join: `${first.address},${second.address}`,
      heartbeatIntervalMs: 20,
      logger,
    });
    await waitFor(() => first.balancer.count(Op.HEARTBEAT) > 0, 5000, 'JOIN and heartbeats at the first');
    expect(first.balancer.joins()).toHaveLength(1);
    expect(first.balancer.joins()[0]).toMatchObject({ nodeId: 'failover-1', port: node.address.port });
    expect(second.balancer.received).toEqual([]);
    expect(records.find((record) => record.msg === 'joined balancer')).toMatchObject({
      balancer: first.address,
    });

    await first.balancer.stop();
    await waitFor(() => second.balancer.count(Op.JOIN) === 1, 10_000, 'JOIN at the second');
    await waitFor(() => second.balancer.count(Op.HEARTBEAT) > 0, 5000, 'heartbeats at the second');
    expect(second.balancer.joins()[0]).toMatchObject({ nodeId: 'failover-1', identity: node.identity });
    expect(records.filter((record) => record.msg === 'joined balancer').at(-1)).toMatchObject({
      balancer: second.address,
    });

    const leavesAtFirst = first.balancer.count(Op.LEAVE);
    await node.stop();
    const received = second.balancer.received;
    const leave = received.map((message) => message.op).lastIndexOf(Op.LEAVE);
    expect(received[leave]).toMatchObject({ op: Op.LEAVE, nodeId: 'failover-1' });
    // Heartbeats go on until the LEAVE is answered (the node stays up for its hand-off), so one
    // may arrive after it; nothing else may.
    expect(received.slice(leave + 1).every((message) => message.op === Op.HEARTBEAT)).toBe(true);
    expect(first.balancer.count(Op.LEAVE)).toBe(leavesAtFirst);
  });

  it('joins the second when the first is unreachable at start, and returns to the first', async () => {
    const unreachable = await unreachableAddress();
    const second = await startBalancer();
    await resources.node({
      balancers: [unreachable, second.address].map(toAddress),
      heartbeatIntervalMs: 20,
    });
    await waitFor(() => second.balancer.count(Op.JOIN) === 1, 10_000, 'JOIN at the second');

    // The first comes up on its port and the second dies: the node goes back to the first.
    const first = await startBalancer(portOf(unreachable));
    await second.balancer.stop();
    await waitFor(() => first.balancer.count(Op.JOIN) === 1, 10_000, 'JOIN back at the first');
    await waitFor(() => first.balancer.count(Op.HEARTBEAT) > 0, 5000, 'heartbeats at the first');
  });

  it('retries a JOIN refused for its identity on the same balancer, not the next one', async () => {
    const first = await startBalancer();
    const second = await startBalancer();
    first.balancer.refuseJoins(2, ErrorCode.IDENTITY_CONFLICT);
    await resources.node({ join: `${first.address},${second.address}`, heartbeatIntervalMs: 20 });
    await waitFor(() => first.balancer.count(Op.JOIN) === 3, 10_000, 'the JOIN accepted after two refusals');
    await waitFor(() => first.balancer.count(Op.HEARTBEAT) > 0, 5000, 'heartbeats once joined');
    expect(first.balancer.roles).toEqual(['node']);
    expect(second.balancer.received).toEqual([]);
    expect(second.balancer.roles).toEqual([]);
  });

  it('spawned with --join given twice, registers with the reachable balancer', async () => {
    const unreachable = await unreachableAddress();
    const second = await startBalancer();
    const third = await startBalancer();
    const spawned = await resources.spawnNode([
      '--port',
      '0',
      '--heartbeat-interval',
      '20',
      '--join',
      unreachable,
      '--join',
      `${second.address},${third.address}`,
    ]);
    await waitFor(() => second.balancer.count(Op.JOIN) === 1, 10_000, 'JOIN at the second');
    expect(second.balancer.joins()[0]).toMatchObject({ nodeId: spawned.ready.id, port: spawned.ready.port });
    expect(third.balancer.received).toEqual([]);
  });
});

describe('balancer options', () => {
  it('reads join as a comma-separated list and balancers as objects', () => {
    const fromJoin = resolveNodeOptions({ join: 'a:1, [::1]:2,c:3' });
    expect(fromJoin.balancers).toEqual([
      { host: 'a', port: 1 },
      { host: '::1', port: 2 },
      { host: 'c', port: 3 },
    ]);
    // `join` keeps its single-balancer shape (the first) and carries the whole list.
    const fromList = resolveNodeOptions({ balancers: [{ host: 'x', port: 7379 }] });
    expect(fromList.balancers).toEqual([{ host: 'x', port: 7379 }]);
    expect(resolveNodeOptions({}).balancers).toEqual([]);
    expect(resolveNodeOptions({}).balancers).toEqual([]);
  });

  it('refuses join with balancers, empty lists and bad addresses with INVALID_ARGUMENT', () => {
    const bad = [
      { join: 'a:1', balancers: [{ host: 'b', port: 2 }] },
      { join: 'a:1,,b:2' },
      { join: 'a:1,b' },
      { join: 'a:1,b:70000' },
      { balancers: [] },
      { balancers: [{ host: '', port: 1 }] },
      { balancers: [{ host: 'a', port: 0 }] },
    ];
    for (const options of bad) {
      expect(() => resolveNodeOptions(options), JSON.stringify(options)).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }),
      );
    }
    expect(() => resolveNodeOptions({ join: 'a:1', balancers: [{ host: 'b', port: 2 }] })).toThrow(
      /join and balancers/,
    );
    expect(() =>
      resolveNodeOptions({
        balancers: [
          { host: 'a', port: 1 },
          { host: 'b', port: -1 },
        ],
      }),
    ).toThrow(/balancers\[1\]\.port/);
  });

  it('refuses a bad --join list with exit code 2', async () => {
    const { spawnSync } = await import('node:child_process');
    const { CLI_PATH } = await import('./helpers.js');
    const run = spawnSync(process.execPath, [CLI_PATH, '--port', '0', '--join', '127.0.0.1:1,,127.0.0.1:2'], {
      encoding: 'utf8',
    });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/join: empty address/);
  });
});

function toAddress(text: string): { host: string; port: number } {
  return { host: '127.0.0.1', port: portOf(text) };
}
