import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfigFile, parseNodeAddress, resolveBalancerOptions } from '../src/config.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('configuration', () => {
  it('parses --node values with and without an id', () => {
    expect(parseNodeAddress('127.0.0.1:7400')).toEqual({ host: '127.0.0.1', port: 7400 });
    expect(parseNodeAddress('n1=localhost:7401')).toEqual({ id: 'n1', host: 'localhost', port: 7401 });
    expect(parseNodeAddress('[::1]:7402')).toEqual({ host: '::1', port: 7402 });
    for (const bad of ['nohost', ':7400', 'h:0', 'h:99999', '=h:1', 'h:x']) {
      expect(() => parseNodeAddress(bad), bad).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }),
      );
    }
  });

  it('applies defaults, uses host:port as a static node id, and rejects duplicates', () => {
    const options = resolveBalancerOptions({ nodes: [{ host: '127.0.0.1', port: 7400 }] });
    expect(options).toMatchObject({
      port: 7379,
      adminPort: 7380,
      hash: 'vnode',
      requestTimeoutMs: 2000,
      heartbeatTimeoutMs: 3000,
      nodes: [{ id: '127.0.0.1:7400', host: '127.0.0.1', port: 7400, weight: 1 }],
    });
    expect(() =>
      resolveBalancerOptions({
        nodes: [
          { id: 'a', host: 'h', port: 1 },
          { id: 'a', host: 'h', port: 2 },
        ],
      }),
    ).toThrow(/twice/);
    expect(() => resolveBalancerOptions({ requestTimeoutMs: 0 })).toThrow(/requestTimeoutMs/);
  });

  it('replication failover: failure timeout and lease default to 5 s and 2 s, the timeout at least twice the lease', () => {
    expect(resolveBalancerOptions({})).toMatchObject({ failureTimeoutMs: 5000, leaseMs: 2000 });
    expect(resolveBalancerOptions({ failureTimeoutMs: 3000, leaseMs: 1000 })).toMatchObject({
      failureTimeoutMs: 3000,
      leaseMs: 1000,
    });
    expect(() => resolveBalancerOptions({ failureTimeoutMs: 3000, leaseMs: 2000 })).toThrow(
      /at least twice leaseMs/,
    );
    expect(() => resolveBalancerOptions({ leaseMs: 0 })).toThrow(/leaseMs/);
    expect(() => resolveBalancerOptions({ failureTimeoutMs: -1 })).toThrow(/failureTimeoutMs/);
  });

  it('replication dead members: --dead-after is off by default, a positive integer when given', () => {
    expect(resolveBalancerOptions({}).deadAfterMs).toBeUndefined();
    expect(resolveBalancerOptions({ deadAfterMs: 600_000 }).deadAfterMs).toBe(600_000);
    expect(() => resolveBalancerOptions({ deadAfterMs: 0 })).toThrow(/deadAfterMs/);
    expect(() => resolveBalancerOptions({ deadAfterMs: 1.5 })).toThrow(/deadAfterMs/);
  });

  it('admin auth: "all" needs a token (it would serve every endpoint to anyone)', () => {
    expect(() => resolveBalancerOptions({ adminAuth: 'all' })).toThrow(/adminAuth all needs an admin token/);
    expect(() => resolveBalancerOptions({ adminAuth: 'all', adminToken: '' })).toThrow(
      /needs an admin token/,
    );
    expect(resolveBalancerOptions({ adminAuth: 'all', adminToken: 't' }).adminAuth).toBe('all');
    expect(resolveBalancerOptions({}).adminAuth).toBe('mutating');
  });

  it('hash tag: unset by default (a new map gets {}), empty for none, two printable ASCII characters else', () => {
    expect(resolveBalancerOptions().hashTag).toBeUndefined();
    expect(resolveBalancerOptions({ hashTag: '' }).hashTag).toBe('');
    expect(resolveBalancerOptions({ hashTag: '$$' }).hashTag).toBe('$$');
    for (const hashTag of ['{', '{}}', '{\u00e9', '\t}']) {
      expect(() => resolveBalancerOptions({ hashTag })).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }),
      );
    }
  });

  it('loads a cluster file and reports what is wrong with a bad one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstore-config-'));
    dirs.push(dir);
    const good = join(dir, 'good.json');
    writeFileSync(good, JSON.stringify({ nodes: [{ id: 'n1', host: '127.0.0.1', port: 7400, weight: 2 }] }));
    expect(await loadConfigFile(good)).toEqual([{ id: 'n1', host: '127.0.0.1', port: 7400, weight: 2 }]);
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ nodes: [{ host: '127.0.0.1', port: 'x' }] }));
    await expect(loadConfigFile(bad)).rejects.toThrow(/port must be a number/);
    await expect(loadConfigFile(join(dir, 'missing.json'))).rejects.toThrow(/cannot read config/);
  });
});
