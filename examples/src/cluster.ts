/**
 * The local cluster: starts storage nodes and a balancer as background processes, records their
 * PIDs and ports, and stops exactly those processes again. Used by cluster:up / cluster:down /
 * demo and by the end-to-end tests.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';

const require = createRequire(import.meta.url);

/**
 * Absolute path of a package's built CLI: this workspace's, or with `distRoot` the one in another
 * checkout of the repository (`<distRoot>/packages/<name>/dist/cli.js`, e.g. a baseline worktree).
 */
export function cliPath(
  pkg: '@dstore/storage-node' | '@dstore/balancer' | '@dstore/client',
  distRoot?: string,
): string {
  if (distRoot !== undefined)
    return join(resolve(distRoot), 'packages', pkg.slice('@dstore/'.length), 'dist', 'cli.js');
  return join(dirname(require.resolve(`${pkg}/package.json`)), 'dist', 'cli.js');
}

/** What a `dstore` CLI run printed and its exit status (null when killed at `timeoutMs`). */
export interface CliRun {
  readonly stdout: string;
  readonly stderr: string;
  readonly status: number | null;
}

/** Runs this workspace's `dstore` CLI with `args`, capturing its output, killed after `timeoutMs`. */
export function runDstore(args: readonly string[], timeoutMs: number): CliRun {
  const result = spawnSync(process.execPath, [cliPath('@dstore/client'), ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  return { stdout: result.stdout, stderr: result.stderr, status: result.status };
}

/** A process of the cluster, as recorded in the state file. */
export interface ClusterProcess {
  readonly role: 'balancer' | 'node';
  readonly id: string;
  readonly pid: number;
  readonly host: string;
  readonly port: number;
  readonly adminPort?: number;
  readonly dataDir?: string;
  readonly log: string;
}

/** PEM files of a TLS cluster: every process serves and dials with `cert`, and verifies peers against `ca`. */
export interface ClusterTls {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

/**
 * Authentication of a secured cluster: the cluster secret every balancer and node proves, and the
 * balancer's users file and admin token.
 */
export interface ClusterAuth {
  readonly clusterSecret: string;
  readonly usersFile?: string;
  readonly adminToken?: string;
}

/** What cluster:up records and cluster:down reads. */
export interface ClusterState {
  readonly root: string;
  readonly balancer: ClusterProcess;
  readonly nodes: ClusterProcess[];
  /** Set when every hop runs over TLS (the admin port serves HTTPS). */
  readonly tls?: ClusterTls;
  /** Set when the cluster authenticates its peers (and clients, with users). */
  readonly auth?: ClusterAuth;
}

/** Options of {@link startCluster}. */
export interface ClusterOptions {
  /** Folder for data, logs and the state file. Default `.dstore` in the folder the command was run from. */
  readonly root?: string;
  /** Storage nodes to start. Default 3. */
  readonly nodes?: number;
  /** Storage engine of every node. Default 'lmdb' (data survives restarts). */
  readonly engine?: 'memory' | 'lmdb';
  /** Balancer client port; 0 picks a free one. Default 0. */
  readonly port?: number;
  /** Balancer admin port; 0 picks a free one. Default 0. */
  readonly adminPort?: number;
  /** Keep the processes when this process exits (cluster:up). Default false. */
  readonly detached?: boolean;
  /** Ms to wait for each process to be ready. Default 20000. */
  readonly readyTimeoutMs?: number;
  /** Root of another checkout whose built CLIs to run (see {@link cliPath}). Default: this workspace's. */
  readonly distRoot?: string;
  /**
   * Give the balancer a `--data-dir` for its cluster map. Default true; false for builds that
   * predate the cluster map (their balancer refuses the option).
   */
  readonly balancerDataDir?: boolean;
  /** TLS on every hop (`--tls-cert/--tls-key/--tls-ca` for every process). Default: plaintext. */
  readonly tls?: ClusterTls;
  /** A cluster secret for every process, users and an admin token for the balancer. Default: none. */
  readonly auth?: ClusterAuth;
  /** More options of the balancer (such as `--resp-port`). Default: none. */
  readonly balancerArgs?: readonly string[];
  /** More options of every node (see {@link NodeStartOptions.nodeArgs}). Default: none. */
  readonly nodeArgs?: readonly string[];
  /**
   * Copies of each key (`--replication-factor`). Default: the balancer's, 3 for a new map (with
   * 3 nodes every key on all 3). Benchmarks that compare with one-copy Redis pass 1; a build
   * that predates the flag (`distRoot`) has only factor 1 and gets no flag for it.
   */
  readonly replicationFactor?: number;
}

/** Options of {@link startNode}. */
export interface NodeStartOptions {
  readonly engine?: 'memory' | 'lmdb';
  readonly readyTimeoutMs?: number;
  readonly distRoot?: string;
  readonly detached?: boolean;
  /** TLS files of this node. Default: the cluster's. */
  readonly tls?: ClusterTls;
  /** More options of this node (such as `--max-memory 16m --eviction allkeys-lru`). Default: none. */
  readonly nodeArgs?: readonly string[];
}

function tlsArgs(tls: ClusterTls | undefined): string[] {
  return tls === undefined ? [] : ['--tls-cert', tls.cert, '--tls-key', tls.key, '--tls-ca', tls.ca];
}

/**
 * The authentication flags of a balancer (everything) or a node (the cluster secret and the users,
 * so clients that route directly authenticate at the nodes as at the balancer).
 */
function authArgs(auth: ClusterAuth | undefined, role: 'balancer' | 'node'): string[] {
  if (auth === undefined) return [];
  const args = ['--cluster-secret', auth.clusterSecret];
  if (auth.usersFile !== undefined) args.push('--users', auth.usersFile);
  if (role === 'balancer' && auth.adminToken !== undefined) args.push('--admin-token', auth.adminToken);
  return args;
}

/**
 * `--replication-factor <n>` for the balancer of `distRoot` (this workspace's when undefined).
 * An older build: none for factor 1 when it predates the flag (its only factor), an error for a
 * factor above 1 there; `--experimental-replication` too above 1 when it still asks for it.
 */
function replicationArgs(factor: number | undefined, distRoot: string | undefined): string[] {
  if (factor === undefined) return [];
  const args = ['--replication-factor', String(factor)];
  if (distRoot === undefined) return args;
  const help = spawnSync(process.execPath, [cliPath('@dstore/balancer', distRoot), '--help'], {
    encoding: 'utf8',
  }).stdout;
  if (!help.includes('--replication-factor')) {
    if (factor === 1) return [];
    throw new Error(
      `the balancer of ${distRoot} has no --replication-factor: it cannot keep ${factor} copies`,
    );
  }
  return factor > 1 && help.includes('--experimental-replication')
    ? [...args, '--experimental-replication']
    : args;
}

/**
 * Starts one storage node `id` that registers with the cluster's balancer; it is not recorded in
 * the state file (stop it with its pid, or let it be one of {@link startCluster}'s).
 */
export function startNode(
  state: Pick<ClusterState, 'root' | 'balancer' | 'tls' | 'auth'>,
  id: string,
  options: NodeStartOptions = {},
): Promise<ClusterProcess> {
  const engine = options.engine ?? 'memory';
  const dataDir = join(state.root, 'data', id);
  const args = [
    '--port',
    '0',
    '--id',
    id,
    '--engine',
    engine,
    '--join',
    `${state.balancer.host}:${state.balancer.port}`,
  ];
  if (engine === 'lmdb') args.push('--data-dir', dataDir);
  args.push(
    ...tlsArgs(options.tls ?? state.tls),
    ...authArgs(state.auth, 'node'),
    ...(options.nodeArgs ?? []),
  );
  return startProcess(
    {
      role: 'node',
      id,
      cli: cliPath('@dstore/storage-node', options.distRoot),
      args,
      root: state.root,
      detached: options.detached ?? false,
      dataDir,
    },
    options.readyTimeoutMs ?? 20_000,
  );
}

/**
 * Restarts node `id` of `state` gracefully: SIGTERM, waits until it exited (SIGKILL past
 * `graceMs`), starts it again under the same id with `options` (lmdb: on its data; memory:
 * empty, it catches up from its chains), and records its new PID in `state` and in the state file.
 */
export async function restartNode(
  state: ClusterState,
  id: string,
  options: NodeStartOptions = {},
  graceMs = 30_000,
): Promise<ClusterProcess> {
  const index = state.nodes.findIndex((node) => node.id === id);
  if (index < 0) throw new Error(`no node ${id} in the cluster of ${state.root}`);
  await stopProcesses([state.nodes[index]!], Date.now() + graceMs);
  const restarted = await startNode(state, id, options);
  state.nodes[index] = restarted;
  if (existsSync(statePath(state.root)))
    writeFileSync(statePath(state.root), `${JSON.stringify(state, null, 2)}\n`);
  return restarted;
}

interface ReadyLine {
  readonly event: 'ready';
  readonly id?: string;
  readonly host: string;
  readonly port: number;
  readonly adminPort?: number;
}

/**
 * The default state folder: `.dstore` where the user ran the command. pnpm runs a package script
 * from the package's folder, so `INIT_CWD` (the caller's folder, set by pnpm and npm) comes first.
 */
export function defaultRoot(): string {
  return resolve(process.env.INIT_CWD ?? process.cwd(), '.dstore');
}

function statePath(root: string): string {
  return join(root, 'cluster.json');
}

/** Reads the recorded cluster, or undefined when none is recorded. */
export function readState(root = defaultRoot()): ClusterState | undefined {
  const file = statePath(root);
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as ClusterState;
}

/** Starts a balancer, then the nodes (which register with it), and waits until the ring has them all up. */
export async function startCluster(options: ClusterOptions = {}): Promise<ClusterState> {
  const root = options.root ?? defaultRoot();
  const nodeCount = options.nodes ?? 3;
  const engine = options.engine ?? 'lmdb';
  const timeoutMs = options.readyTimeoutMs ?? 20_000;
  if (readState(root))
    throw new Error(`a cluster is already recorded in ${statePath(root)}: run cluster:down first`);
  mkdirSync(join(root, 'logs'), { recursive: true });
  const started: ClusterProcess[] = [];
  try {
    const balancer = await startProcess(
      {
        role: 'balancer',
        id: 'balancer',
        cli: cliPath('@dstore/balancer', options.distRoot),
        args: [
          '--port',
          String(options.port ?? 0),
          '--admin-port',
          String(options.adminPort ?? 0),
          // The authoritative cluster map: a restarted balancer routes on it at once.
          ...(options.balancerDataDir === false ? [] : ['--data-dir', join(root, 'data', 'balancer')]),
          ...tlsArgs(options.tls),
          ...authArgs(options.auth, 'balancer'),
          ...(options.balancerArgs ?? []),
          ...replicationArgs(options.replicationFactor, options.distRoot),
        ],
        root,
        detached: options.detached ?? false,
      },
      timeoutMs,
    );
    started.push(balancer);
    const nodes: ClusterProcess[] = [];
    const { tls, auth } = options;
    const secured = { ...(tls === undefined ? {} : { tls }), ...(auth === undefined ? {} : { auth }) };
    for (let index = 1; index <= nodeCount; index++) {
      const node = await startNode({ root, balancer, ...secured }, `node-${index}`, {
        engine,
        readyTimeoutMs: timeoutMs,
        ...(options.distRoot === undefined ? {} : { distRoot: options.distRoot }),
        ...(options.detached === undefined ? {} : { detached: options.detached }),
        ...(options.nodeArgs === undefined ? {} : { nodeArgs: options.nodeArgs }),
      });
      started.push(node);
      nodes.push(node);
    }
    const state: ClusterState = { root, balancer, nodes, ...secured };
    writeFileSync(statePath(root), `${JSON.stringify(state, null, 2)}\n`);
    await waitForRing(state, timeoutMs);
    return state;
  } catch (error) {
    await stopProcesses(started, Date.now() + 10_000);
    // Nothing of it runs any more: a recorded state would make the next start refuse.
    rmSync(statePath(root), { force: true });
    throw error;
  }
}

/** Stops the recorded cluster's processes (SIGTERM, then SIGKILL after `graceMs`) and forgets it. */
export async function stopCluster(root = defaultRoot(), graceMs = 10_000): Promise<ClusterProcess[]> {
  const state = readState(root);
  if (!state) return [];
  // Nodes first, and the balancer once they are gone, so their LEAVE reaches a balancer that is
  // still up (a leaving node whose balancer is gone waits for one until its --leave-timeout).
  const deadline = Date.now() + graceMs;
  await stopProcesses(state.nodes, deadline);
  await stopProcesses([state.balancer], Math.max(deadline, Date.now() + 2000));
  rmSync(statePath(root), { force: true });
  return [...state.nodes, state.balancer];
}

/** Whether `pid` is alive and still one of ours (its command line runs a dstore CLI). */
export function isOurProcess(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('dist/cli.js');
  } catch {
    // No /proc (macOS): trust the recorded PID.
    return true;
  }
}

/** SIGTERM to each of `processes`, SIGKILL to those still running at `deadline`; resolves once all are gone. */
async function stopProcesses(processes: readonly ClusterProcess[], deadline: number): Promise<void> {
  for (const proc of processes) {
    if (isOurProcess(proc.pid)) process.kill(proc.pid, 'SIGTERM');
  }
  for (const proc of processes) {
    while (isOurProcess(proc.pid) && Date.now() < deadline) await sleep(50);
    if (isOurProcess(proc.pid)) process.kill(proc.pid, 'SIGKILL');
    // A SIGKILLed process is gone a moment later, not at once.
    while (isOurProcess(proc.pid)) await sleep(20);
  }
}

/**
 * Extra Node.js flags for every process started here, from `DSTORE_CLUSTER_NODE_FLAGS`
 * (space-separated), e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile a benchmark's servers
 * (Node refuses --cpu-prof in NODE_OPTIONS).
 */
export function nodeFlags(): string[] {
  return (process.env.DSTORE_CLUSTER_NODE_FLAGS ?? '').split(' ').filter((flag) => flag !== '');
}

interface StartSpec {
  readonly role: 'balancer' | 'node';
  readonly id: string;
  readonly cli: string;
  readonly args: string[];
  readonly root: string;
  readonly detached: boolean;
  readonly dataDir?: string;
}

async function startProcess(spec: StartSpec, timeoutMs: number): Promise<ClusterProcess> {
  const log = join(spec.root, 'logs', `${spec.id}.log`);
  const out = join(spec.root, 'logs', `${spec.id}.out`);
  const stdout = openSync(out, 'w');
  const stderr = openSync(log, 'a');
  const child: ChildProcess = spawn(process.execPath, [...nodeFlags(), spec.cli, ...spec.args], {
    detached: spec.detached,
    stdio: ['ignore', stdout, stderr],
  });
  closeSync(stdout);
  closeSync(stderr);
  if (spec.detached) child.unref();
  const ready = await waitForReadyLine(out, child, timeoutMs, log);
  return {
    role: spec.role,
    id: ready.id ?? spec.id,
    pid: child.pid!,
    host: ready.host,
    port: ready.port,
    ...(ready.adminPort === undefined ? {} : { adminPort: ready.adminPort }),
    ...(spec.dataDir === undefined ? {} : { dataDir: spec.dataDir }),
    log,
  };
}

async function waitForReadyLine(
  out: string,
  child: ChildProcess,
  timeoutMs: number,
  log: string,
): Promise<ReadyLine> {
  const deadline = Date.now() + timeoutMs;
  let exited: number | null = null;
  child.once('exit', (code) => {
    exited = code ?? -1;
  });
  while (Date.now() < deadline) {
    const firstLine = readFileSync(out, 'utf8').split('\n')[0] ?? '';
    if (firstLine.trim().startsWith('{')) {
      const parsed = JSON.parse(firstLine) as ReadyLine;
      if (parsed.event === 'ready') return parsed;
    }
    if (exited !== null) {
      throw new Error(`${out} exited with code ${exited} before it was ready; see ${log}:\n${tail(log)}`);
    }
    await sleep(25);
  }
  child.kill('SIGKILL');
  throw new Error(`not ready within ${timeoutMs} ms; see ${log}:\n${tail(log)}`);
}

/**
 * GETs a JSON document from the balancer's admin port: HTTPS verified against the cluster CA when
 * the cluster runs TLS (fetch cannot take a CA), HTTP otherwise.
 */
export function adminJson<T>(
  state: {
    readonly balancer: Pick<ClusterProcess, 'host' | 'adminPort'>;
    readonly tls?: ClusterTls | undefined;
  },
  path: string,
): Promise<T> {
  const url = `${state.tls ? 'https' : 'http'}://${state.balancer.host}:${state.balancer.adminPort}${path}`;
  return new Promise<T>((resolveJson, reject) => {
    const onResponse = (response: IncomingMessage): void => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        body += chunk;
      });
      response.on('end', () => {
        try {
          resolveJson(JSON.parse(body) as T);
        } catch (error) {
          reject(error);
        }
      });
    };
    const request = state.tls
      ? httpsGet(url, { ca: readFileSync(state.tls.ca), timeout: 5000 }, onResponse)
      : httpGet(url, { timeout: 5000 }, onResponse);
    request.on('timeout', () => request.destroy(new Error(`no answer from ${url} within 5000 ms`)));
    request.on('error', reject);
  });
}

/** Polls the balancer's /health until `nodes` nodes (default: every recorded node) are up. */
export async function waitForRing(
  state: ClusterState,
  timeoutMs = 20_000,
  nodes = state.nodes.length,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const health = await adminJson<{ ready?: boolean; nodes?: number; nodesUp?: number }>(state, '/health');
      last = JSON.stringify(health);
      if (health.ready && health.nodesUp === nodes && (await joinsDone(state, nodes))) return;
    } catch (error) {
      last = (error as Error).message;
    }
    await sleep(50);
  }
  throw new Error(`the ring did not get ${nodes} nodes up within ${timeoutMs} ms (last /health: ${last})`);
}

/**
 * Every node is in the ring and no ring change runs: with replication the last join's switch
 * briefly refuses writes of its chains (`UNAVAILABLE`, retryable), so a script starts after it.
 * A build whose `/ring` has no map (older than the cluster map) only needs the nodes.
 */
async function joinsDone(state: ClusterState, nodes: number): Promise<boolean> {
  const ring = await adminJson<{
    map?: { transition: unknown };
    nodes?: readonly { share: number }[];
  }>(state, '/ring');
  const inRing = (ring.nodes ?? []).filter((node) => node.share > 0).length;
  return ring.map === undefined ? true : ring.map.transition === null && inRing === nodes;
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
