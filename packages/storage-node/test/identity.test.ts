import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DstoreError, ErrorCode, Op, type Response } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { IDENTITY_FILE_NAME, loadOrCreateNodeIdentity } from '../src/identity.js';
import { createStorageNode, type StorageNodeOptions } from '../src/index.js';
import { FakeBalancer } from './fake-balancer.js';
import { CLI_PATH, Resources, type SpawnedNode, silentLogger, waitFor } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

const IDENTITY = /^[0-9a-f]{32}$/;

/** A fake balancer, started, and the `join` option pointing at it. */
async function startBalancer(): Promise<{ balancer: FakeBalancer; join: string }> {
  const balancer = new FakeBalancer(resources);
  const port = await balancer.start();
  return { balancer, join: `127.0.0.1:${port}` };
}

/** The rejection of `promise`, which must reject. */
async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

/** The identity in the 'storage node listening' line a spawned node logs at start. */
async function loggedIdentity(node: SpawnedNode): Promise<string> {
  const listeningLine = (): string | undefined =>
    node
      .stderr()
      .split('\n')
      .find((line) => line.includes('"storage node listening"'));
  await waitFor(() => listeningLine() !== undefined, 5000, 'the startup log line');
  return (JSON.parse(listeningLine() as string) as { identity: string }).identity;
}

/** Runs the CLI to its end (stdio closed, so stderr is complete): its exit code and stderr. */
function runCliToExit(args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  resources.defer(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  return new Promise((resolveRun) => child.once('close', (code) => resolveRun({ code, stderr })));
}

describe('node identity', () => {
  it('lmdb: created on the first start in <dataDir>/node-identity, the same after a restart, sent in every JOIN', async () => {
    const { balancer, join: balancerAddress } = await startBalancer();
    const dataDir = resources.tempDir();
    const options: StorageNodeOptions = { id: 'durable-1', engine: 'lmdb', dataDir, join: balancerAddress };

    const first = await resources.node(options);
    expect(first.identity).toMatch(IDENTITY);
    expect(readFileSync(join(dataDir, IDENTITY_FILE_NAME), 'utf8')).toBe(`${first.identity}\n`);
    // The temp file of the atomic write is gone.
    expect(readdirSync(dataDir).filter((name) => name.startsWith(IDENTITY_FILE_NAME))).toEqual([
      IDENTITY_FILE_NAME,
    ]);
    await waitFor(() => balancer.count(Op.JOIN) === 1, 5000, 'the first JOIN');
    await first.stop();

    const second = await resources.node(options);
    expect(second.identity).toBe(first.identity);
    await waitFor(() => balancer.count(Op.JOIN) === 2, 5000, 'the JOIN after the restart');
    expect(balancer.joins().map((request) => request.identity)).toEqual([first.identity, first.identity]);

    const client = await resources.client(second.address.port);
    const answer: Response = await client.request({ op: Op.STATS });
    expect(answer.op).toBe(Op.STATS_RESULT);
    expect((answer as Extract<Response, { op: typeof Op.STATS_RESULT }>).stats['node.identity']).toBe(
      first.identity,
    );
    expect(second.stats()['node.identity']).toBe(first.identity);
  });

  it('memory: a new identity at every start, sent in JOIN', async () => {
    const { balancer, join: balancerAddress } = await startBalancer();
    const options: StorageNodeOptions = { id: 'volatile-1', join: balancerAddress };

    const first = await resources.node(options);
    await waitFor(() => balancer.count(Op.JOIN) === 1, 5000, 'the first JOIN');
    await first.stop();
    const second = await resources.node(options);
    await waitFor(() => balancer.count(Op.JOIN) === 2, 5000, 'the JOIN after the restart');

    expect(first.identity).toMatch(IDENTITY);
    expect(second.identity).toMatch(IDENTITY);
    expect(second.identity).not.toBe(first.identity);
    expect(balancer.joins().map((request) => request.identity)).toEqual([first.identity, second.identity]);
    expect(second.stats()['node.identity']).toBe(second.identity);
  });

  it('is not available before start()', () => {
    const node = createStorageNode({ port: 0, logger: silentLogger });
    expect(() => node.identity).toThrow(/not started/);
  });

  it('loadOrCreateNodeIdentity creates the data dir if needed and returns the stored identity afterwards', async () => {
    const dataDir = join(resources.tempDir(), 'nested', 'data');
    const created = await loadOrCreateNodeIdentity(dataDir);
    expect(created).toMatch(IDENTITY);
    expect(await loadOrCreateNodeIdentity(dataDir)).toBe(created);
    // Written as one line, read back whether or not an editor kept the newline.
    writeFileSync(join(dataDir, IDENTITY_FILE_NAME), created);
    expect(await loadOrCreateNodeIdentity(dataDir)).toBe(created);
  });

  const badContents = [
    { what: 'garbage', content: 'not an identity\n' },
    { what: 'an empty file', content: '' },
    { what: 'a truncated identity', content: '0123456789abcdef\n' },
    { what: 'upper-case hex', content: '0123456789ABCDEF0123456789ABCDEF\n' },
    { what: 'two lines', content: '0123456789abcdef0123456789abcdef\n0123456789abcdef0123456789abcdef\n' },
  ];

  it.each(badContents)(
    'lmdb: start fails when the identity file holds $what, and the file is kept',
    async ({ content }) => {
      const dataDir = resources.tempDir();
      const path = join(dataDir, IDENTITY_FILE_NAME);
      writeFileSync(path, content);
      const node = createStorageNode({ port: 0, engine: 'lmdb', dataDir, logger: silentLogger });
      resources.defer(() => node.stop());

      const error = await rejection(node.start());
      expect(error).toBeInstanceOf(DstoreError);
      expect((error as DstoreError).code).toBe(ErrorCode.INTERNAL);
      expect(error.message).toContain(`the node identity file ${path} does not hold a valid identity`);
      expect(error.message).toMatch(/Restore it from a backup/);
      expect(readFileSync(path, 'utf8')).toBe(content);
      expect(() => node.identity).toThrow(/not started/);
    },
  );

  it('lmdb: start fails when the identity file cannot be read', async () => {
    const dataDir = resources.tempDir();
    mkdirSync(join(dataDir, IDENTITY_FILE_NAME));
    const node = createStorageNode({ port: 0, engine: 'lmdb', dataDir, logger: silentLogger });
    resources.defer(() => node.stop());
    const error = await rejection(node.start());
    expect(error.message).toContain(
      `cannot read the node identity file ${join(dataDir, IDENTITY_FILE_NAME)}`,
    );
  });

  it('CLI: logs the identity at startup and keeps it across a restart on the same data dir', async () => {
    const dataDir = resources.tempDir();
    const args = ['--port', '0', '--id', 'cli-durable', '--engine', 'lmdb', '--data-dir', dataDir];
    const first = await resources.spawnNode(args);
    const identity = await loggedIdentity(first);
    expect(identity).toMatch(IDENTITY);
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);

    const second = await resources.spawnNode(args);
    expect(await loggedIdentity(second)).toBe(identity);
    expect(readFileSync(join(dataDir, IDENTITY_FILE_NAME), 'utf8')).toBe(`${identity}\n`);
  });

  it('CLI: a corrupt identity file makes the start fail with exit code 1 and a clear message', async () => {
    const dataDir = resources.tempDir();
    writeFileSync(join(dataDir, IDENTITY_FILE_NAME), 'garbage');
    const { code, stderr } = await runCliToExit(['--port', '0', '--engine', 'lmdb', '--data-dir', dataDir]);
    expect(code).toBe(1);
    expect(stderr).toContain('cannot start');
    expect(stderr).toContain('does not hold a valid identity');
    expect(readFileSync(join(dataDir, IDENTITY_FILE_NAME), 'utf8')).toBe('garbage');
  });

  it('CLI: a second node on the same data dir is refused while the first runs, and starts once it was SIGKILLed', async () => {
    // LMDB lets two processes share an environment: two nodes on one dir each served the other's
    // keys, and one's purge after a migration deleted what the other had been given (found by hand).
    const dataDir = resources.tempDir();
    const first = await resources.spawnNode([
      '--port',
      '0',
      '--id',
      'lock-1',
      '--engine',
      'lmdb',
      '--data-dir',
      dataDir,
    ]);
    const args = ['--port', '0', '--id', 'lock-2', '--engine', 'lmdb', '--data-dir', dataDir];
    const refused = await runCliToExit(args);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(
      `${dataDir} is in use by another storage node (pid ${first.child.pid}); give each node its own --data-dir`,
    );
    first.child.kill('SIGKILL');
    await first.exited;
    // The lock a SIGKILL left behind is taken over.
    const second = await resources.spawnNode(args);
    expect(readFileSync(join(dataDir, 'node.lock'), 'utf8')).toMatch(
      new RegExp(`^${second.child.pid}( \\d+)?$`),
    );
    // A graceful stop releases it.
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    expect(readdirSync(dataDir)).not.toContain('node.lock');
  });
});
