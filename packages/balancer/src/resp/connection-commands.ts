import { performance } from 'node:perf_hooks';
import { DEFAULT_USER, DstoreError, ErrorCode, keyspaceDenied } from '@dstore/protocol';
import { globMatcher } from '@dstore/protocol/internal';
import { integerOf, isWord, textOf, unknownSubcommand, wrongArity } from './arguments.js';
import { admitAnonymous, authenticate, authenticationRequired, WRONGPASS } from './auth.js';
import { type CommandCall, type DataCommand, type RespCommand, withCall } from './command-table.js';
import type { RespReplyTarget } from './connection.js';
import type { RespWriter } from './encoder.js';
import { respErrorLine } from './errors.js';
import type { RespServices } from './services.js';

/** The Redis version dstore's RESP front door answers as (the command set it follows). */
export const REDIS_COMPATIBLE_VERSION = '7.0.0';

/** Answers `seq` with +OK. */
function ok({ connection, seq }: CommandCall): void {
  connection.replyOk(seq);
}

function error({ connection, seq }: CommandCall, line: string): void {
  connection.replyError(seq, line);
}

/** PING [message]: positional, as the data commands (redis-benchmark's PING tests are hot). */
function ping(connection: RespReplyTarget, args: Uint8Array[], seq: number): void {
  if (args.length > 2) {
    connection.replyError(seq, wrongArity('ping'));
    return;
  }
  const writer = connection.beginReply(seq);
  if (args.length === 2) writer.bulk(args[1]!);
  else writer.simple('PONG');
  connection.endReply(seq);
}

function echo(connection: RespReplyTarget, args: Uint8Array[], seq: number): void {
  connection.beginReply(seq).bulk(args[1]!);
  connection.endReply(seq);
}

/** The keyless commands a transaction may hold (answered in EXEC's array, as Redis does). */
export const KEYLESS_IN_TRANSACTION: readonly DataCommand[] = [
  { name: 'ping', arity: -1, flags: ['fast', 'stale'], keys: [0, 0, 0], run: ping },
  { name: 'echo', arity: 2, flags: ['fast'], keys: [0, 0, 0], run: echo },
];

/**
 * TIME: the balancer's wall clock as Redis answers it, the Unix time in seconds and the
 * microseconds within that second, two bulk strings.
 */
function time({ connection, seq }: CommandCall): void {
  const micros = Math.round((performance.timeOrigin + performance.now()) * 1000);
  const writer = connection.beginReply(seq);
  writer.array(2);
  writer.bulkText(String(Math.floor(micros / 1_000_000)));
  writer.bulkText(String(micros % 1_000_000));
  connection.endReply(seq);
}

/**
 * WAIT numreplicas timeout: answers at once how many replicas every acknowledged write has. Redis
 * waits (up to `timeout`) for its asynchronous replicas to catch up; dstore acknowledges a write
 * only once every serving member of its chain holds it, so there is nothing to wait for: the answer
 * is the shortest serving chain less its head (factor 3, all members up: 2; factor 1: 0).
 */
function wait(call: CommandCall): void {
  const { args, connection, seq, services } = call;
  if (integerOf(args[1]!) === undefined) {
    error(call, 'ERR value is not an integer or out of range');
    return;
  }
  const timeout = integerOf(args[2]!);
  if (timeout === undefined) {
    error(call, 'ERR timeout is not an integer or out of range');
    return;
  }
  if (timeout < 0) {
    error(call, 'ERR timeout is negative');
    return;
  }
  connection.beginReply(seq).integer(services.replicasOfEveryWrite());
  connection.endReply(seq);
}

function quit(call: CommandCall): void {
  ok(call);
  void call.connection.close();
}

function select(call: CommandCall): void {
  const index = integerOf(call.args[1]!);
  if (index === undefined) {
    error(call, 'ERR value is not an integer or out of range');
    return;
  }
  if (index !== 0) {
    error(call, 'ERR DB index is out of range');
    return;
  }
  ok(call);
}

/** AUTH [user] password. */
function auth(call: CommandCall): void {
  const { args, services, connection, seq } = call;
  if (args.length > 3) {
    error(call, 'ERR syntax error');
    return;
  }
  if (!authenticationRequired(services)) {
    // As Redis with no password: the default user has none ("nopass"), so AUTH default <anything>
    // succeeds (clients configured with a user and password connect); AUTH <password> alone is
    // Redis's configuration error, and any other user does not exist.
    if (args.length === 2) {
      error(
        call,
        'ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?',
      );
      return;
    }
    if (textOf(args[1]!) !== DEFAULT_USER) {
      error(call, WRONGPASS);
      return;
    }
    if (connection.identity === undefined && !admitAnonymous(services, connection, seq)) return;
    ok(call);
    return;
  }
  const user = args.length === 3 ? textOf(args[1]!) : 'default';
  authenticate(services, connection, seq, user, textOf(args[args.length - 1]!), () => ok(call));
}

/** Redis refuses client names with spaces, newlines or other characters outside '!'..'~'. */
function validClientName(name: Uint8Array): boolean {
  for (const byte of name) if (byte < 33 || byte > 126) return false;
  return true;
}

const BAD_CLIENT_NAME = 'ERR Client names cannot contain spaces, newlines or special characters.';

/** HELLO [protover [AUTH user pass] [SETNAME name]]: switches protocol, answers the server map. */
function hello(call: CommandCall): void {
  const { args, services, connection, seq } = call;
  let version = connection.version;
  if (args.length >= 2) {
    const requested = integerOf(args[1]!);
    if (requested === undefined) {
      error(call, 'ERR Protocol version is not an integer or out of range');
      return;
    }
    if (requested !== 2 && requested !== 3) {
      error(call, 'NOPROTO unsupported protocol version');
      return;
    }
    version = requested;
  }
  let credentials: { user: string; password: string } | undefined;
  let name: Uint8Array | undefined;
  for (let index = 2; index < args.length; index++) {
    const rest = args.length - index - 1;
    if (isWord(args[index]!, 'auth') && rest >= 2) {
      credentials = { user: textOf(args[index + 1]!), password: textOf(args[index + 2]!) };
      index += 2;
    } else if (isWord(args[index]!, 'setname') && rest >= 1) {
      name = args[++index]!;
      if (!validClientName(name)) {
        error(call, BAD_CLIENT_NAME);
        return;
      }
    } else {
      error(call, `ERR Syntax error in HELLO option '${textOf(args[index]!).slice(0, 128)}'`);
      return;
    }
  }
  const answer = (): void => {
    connection.version = version;
    if (name !== undefined) connection.name = name;
    helloReply(call);
  };
  if (credentials !== undefined && authenticationRequired(services)) {
    authenticate(services, connection, seq, credentials.user, credentials.password, answer);
    return;
  }
  if (connection.identity === undefined) {
    if (authenticationRequired(services)) {
      error(
        call,
        'NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time',
      );
      return;
    }
    if (!admitAnonymous(services, connection, seq)) return;
  }
  answer();
}

function helloReply({ connection, seq }: CommandCall): void {
  const writer = connection.beginReply(seq);
  writer.map(7);
  writer.bulkText('server');
  writer.bulkText('redis');
  writer.bulkText('version');
  writer.bulkText(REDIS_COMPATIBLE_VERSION);
  writer.bulkText('proto');
  writer.integer(connection.version);
  writer.bulkText('id');
  writer.integer(connection.id);
  writer.bulkText('mode');
  writer.bulkText('standalone');
  writer.bulkText('role');
  writer.bulkText('master');
  writer.bulkText('modules');
  writer.array(0);
  connection.endReply(seq);
}

/** CLIENT SETINFO | SETNAME | GETNAME | ID; other subcommands are an error, the connection stays. */
function client(call: CommandCall): void {
  const { args, connection, seq } = call;
  const sub = args[1]!;
  if (isWord(sub, 'setinfo')) {
    if (args.length !== 4) {
      error(call, wrongArity('client|setinfo'));
      return;
    }
    if (!isWord(args[2]!, 'lib-name') && !isWord(args[2]!, 'lib-ver')) {
      error(call, `ERR Unrecognized option '${textOf(args[2]!).slice(0, 128)}'`);
      return;
    }
    ok(call);
    return;
  }
  if (isWord(sub, 'setname')) {
    if (args.length !== 3) {
      error(call, wrongArity('client|setname'));
      return;
    }
    if (!validClientName(args[2]!)) {
      error(call, BAD_CLIENT_NAME);
      return;
    }
    connection.name = args[2]!.length === 0 ? undefined : Uint8Array.from(args[2]!);
    ok(call);
    return;
  }
  if (isWord(sub, 'getname')) {
    connection.beginReply(seq).bulk(connection.name ?? null);
    connection.endReply(seq);
    return;
  }
  if (isWord(sub, 'id')) {
    connection.beginReply(seq).integer(connection.id);
    connection.endReply(seq);
    return;
  }
  error(call, unknownSubcommand(sub, 'client'));
}

/**
 * The sections of INFO, in Redis's order; `loading:0` is what ioredis's ready check reads. The
 * keyspace section's lines come from the nodes (see {@link keyspaceLines}) and are filled in by
 * {@link info} only when asked for.
 */
function infoSections(services: RespServices): [name: string, lines: string[]][] {
  const facts = services.facts();
  return [
    [
      'server',
      [
        `redis_version:${REDIS_COMPATIBLE_VERSION}`,
        'redis_mode:standalone',
        `dstore_version:${facts.version}`,
        `dstore_balancer_id:${facts.balancerId}`,
        `process_id:${process.pid}`,
        `tcp_port:${facts.port}`,
        `uptime_in_seconds:${facts.uptimeSeconds}`,
      ],
    ],
    ['clients', [`connected_clients:${facts.connectedClients}`]],
    ['persistence', ['loading:0']],
    ['replication', ['role:master', 'connected_slaves:0']],
    ['cluster', ['cluster_enabled:0', `dstore_nodes:${facts.nodes}`, `dstore_ring_epoch:${facts.epoch}`]],
    ['keyspace', []],
  ];
}

/**
 * The keyspace section's lines: `db0:keys=N` from the cluster's DBSIZE, as Redis prints it (no
 * line for an empty database). Expiring keys are not counted by the nodes, so Redis's `expires`
 * and `avg_ttl` are left out rather than reported as 0. A DBSIZE that fails (a node down) gives
 * `dstore_keyspace_error:<code>` instead of no line, which would read as an empty database; INFO
 * itself never fails for it. A user limited to prefixes gets no count (as DBSIZE refuses them).
 */
async function keyspaceLines(call: CommandCall): Promise<string[]> {
  const identity = call.connection.identity;
  if (identity?.kind === 'user' && keyspaceDenied(identity.grant) !== undefined) return [];
  try {
    const keys = await call.services.dbSize();
    return keys === 0 ? [] : [`db0:keys=${keys}`];
  } catch (failure) {
    const code = failure instanceof DstoreError ? failure.code : ErrorCode.INTERNAL;
    return [`dstore_keyspace_error:${code}`];
  }
}

/**
 * INFO [section ...]: `all`, `default`, `everything` or no section = every section. The keyspace
 * section is filled in (a DBSIZE over every node) only when named or with `all` / `everything`:
 * clients send a plain INFO on every connect (ioredis's ready check), and that must stay cheap and
 * answer while a node is down.
 */
function info(call: CommandCall): void {
  const { args, services, connection, seq } = call;
  const wanted = args.slice(1).map((arg) => textOf(arg).toLowerCase());
  const everything =
    wanted.length === 0 || wanted.some((name) => ['all', 'default', 'everything'].includes(name));
  const sections = infoSections(services).filter(([name]) => everything || wanted.includes(name));
  const answer = (): void => {
    const text = sections
      .map(
        ([name, lines]) =>
          `# ${name[0]!.toUpperCase()}${name.slice(1)}\r\n${lines.map((line) => `${line}\r\n`).join('')}`,
      )
      .join('\r\n');
    connection.beginReply(seq).bulkText(text);
    connection.endReply(seq);
  };
  const countKeys = wanted.some((name) => ['keyspace', 'all', 'everything'].includes(name));
  const keyspace = sections.find(([name]) => name === 'keyspace');
  if (!countKeys || keyspace === undefined) {
    answer();
    return;
  }
  void keyspaceLines(call).then((lines) => {
    keyspace[1].push(...lines);
    answer();
  });
}

/** One COMMAND entry, as Redis 7 shapes it (name, arity, flags, keys, then empty ACL/tips/specs/subcommands). */
function writeCommandInfo(writer: RespWriter, command: RespCommand): void {
  writer.array(10);
  writer.bulkText(command.name);
  writer.integer(command.arity);
  writer.array(command.flags.length);
  for (const flag of command.flags) writer.simple(flag);
  writer.integer(command.keys[0]);
  writer.integer(command.keys[1]);
  writer.integer(command.keys[2]);
  for (let empty = 0; empty < 4; empty++) writer.array(0);
}

/** COMMAND, COMMAND COUNT, COMMAND INFO name..., COMMAND DOCS (empty: clients fall back to their own help). */
function command(call: CommandCall): void {
  const { args, services, connection, seq } = call;
  const commands = services.commands.all();
  const writer = connection.beginReply(seq);
  if (args.length === 1) {
    writer.array(commands.length);
    for (const entry of commands) writeCommandInfo(writer, entry);
    connection.endReply(seq);
    return;
  }
  const sub = args[1]!;
  if (isWord(sub, 'count')) {
    writer.integer(commands.length);
    connection.endReply(seq);
    return;
  }
  if (isWord(sub, 'docs')) {
    writer.map(0);
    connection.endReply(seq);
    return;
  }
  if (isWord(sub, 'info')) {
    writer.array(args.length - 2);
    for (const name of args.slice(2)) {
      const entry = services.commands.get(textOf(name));
      if (entry === undefined) writer.nil();
      else writeCommandInfo(writer, entry);
    }
    connection.endReply(seq);
    return;
  }
  error(call, unknownSubcommand(sub, 'command'));
}

/** What CONFIG GET reports without asking the nodes: enough for redis-benchmark and test harnesses. */
const CONFIG: readonly [string, string][] = [
  ['save', ''],
  ['appendonly', 'no'],
  ['databases', '1'],
];
/** What CONFIG GET reports from the nodes' STATS (see `clusterMemoryConfig`), after {@link CONFIG}. */
const MEMORY_CONFIG = ['maxmemory', 'maxmemory-policy'] as const;

/**
 * Whether a setting's name matches a CONFIG GET pattern: Redis's glob (the one SCAN MATCH uses),
 * case-insensitive as Redis matches setting names. Any pattern is valid (`[` with no `]` too).
 */
function settingMatcher(pattern: Uint8Array): (name: string) => boolean {
  const lowerCase = pattern.map((byte) => (byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte));
  const matches = globMatcher(lowerCase);
  return (name) => matches(Buffer.from(name, 'latin1'));
}

/** CONFIG GET pattern [pattern ...]; other subcommands are refused. */
function config(call: CommandCall): void {
  const { args, connection, seq } = call;
  if (!isWord(args[1]!, 'get')) {
    error(call, unknownSubcommand(args[1]!, 'config'));
    return;
  }
  if (args.length < 3) {
    error(call, wrongArity('config|get'));
    return;
  }
  const patterns = args.slice(2).map(settingMatcher);
  const wanted = (name: string): boolean => patterns.some((matches) => matches(name));
  const matches = CONFIG.filter(([name]) => wanted(name));
  const answer = (pairs: readonly (readonly [string, string])[]): void => {
    const writer = connection.beginReply(seq);
    writer.map(pairs.length);
    for (const [name, value] of pairs) {
      writer.bulkText(name);
      writer.bulkText(value);
    }
    connection.endReply(seq);
  };
  const memory = MEMORY_CONFIG.filter(wanted);
  if (memory.length === 0) {
    answer(matches);
    return;
  }
  call.services.memoryConfig().then(
    ({ maxmemory, policy }) =>
      answer([
        ...matches,
        ...memory.map((name) => [name, name === 'maxmemory' ? String(maxmemory) : policy] as const),
      ]),
    (failure: unknown) => error(call, respErrorLine(ErrorCode.INTERNAL, String(failure))),
  );
}

/**
 * FLUSHALL / FLUSHDB [ASYNC|SYNC]: the native FLUSH of every node (one database: both flush it
 * all), for a user who may write every key; refused (TRYAGAIN) while a migration runs. ASYNC and
 * SYNC both answer once every node has flushed.
 */
function flush(call: CommandCall): void {
  const { args, connection } = call;
  if (args.length > 2 || (args.length === 2 && !isWord(args[1]!, 'async') && !isWord(args[1]!, 'sync'))) {
    error(call, 'ERR syntax error');
    return;
  }
  const identity = connection.identity;
  if (identity?.kind === 'user' && identity.grant.limited) {
    error(
      call,
      `NOPERM user '${identity.grant.name}' may not flush: FLUSHALL needs read-write access to every key`,
    );
    return;
  }
  call.services.flush().then(
    () => ok(call),
    (failure: unknown) => {
      const code = failure instanceof DstoreError ? failure.code : ErrorCode.INTERNAL;
      error(call, respErrorLine(code, failure instanceof Error ? failure.message : String(failure)));
    },
  );
}

const NO_KEYS = [0, 0, 0] as const;

/** The connection commands: what clients send on connect, and the housekeeping ones. */
export const CONNECTION_COMMANDS: readonly RespCommand[] = [
  ...KEYLESS_IN_TRANSACTION,
  { name: 'wait', arity: 3, flags: ['noscript'], keys: NO_KEYS, run: withCall(wait) },
  { name: 'time', arity: 1, flags: ['loading', 'stale', 'fast'], keys: NO_KEYS, run: withCall(time) },
  {
    name: 'quit',
    arity: -1,
    flags: ['fast', 'no_auth'],
    keys: NO_KEYS,
    beforeAuth: true,
    run: withCall(quit),
  },
  { name: 'select', arity: 2, flags: ['loading', 'stale', 'fast'], keys: NO_KEYS, run: withCall(select) },
  {
    name: 'auth',
    arity: -2,
    flags: ['noscript', 'loading', 'stale', 'fast', 'no_auth'],
    keys: NO_KEYS,
    beforeAuth: true,
    run: withCall(auth),
  },
  {
    name: 'hello',
    arity: -1,
    flags: ['noscript', 'loading', 'stale', 'fast', 'no_auth'],
    keys: NO_KEYS,
    beforeAuth: true,
    run: withCall(hello),
  },
  {
    name: 'client',
    arity: -2,
    flags: ['noscript', 'loading', 'stale'],
    keys: NO_KEYS,
    run: withCall(client),
  },
  { name: 'info', arity: -1, flags: ['loading', 'stale'], keys: NO_KEYS, run: withCall(info) },
  { name: 'command', arity: -1, flags: ['loading', 'stale'], keys: NO_KEYS, run: withCall(command) },
  {
    name: 'config',
    arity: -2,
    flags: ['admin', 'noscript', 'loading', 'stale'],
    keys: NO_KEYS,
    run: withCall(config),
  },
  { name: 'flushall', arity: -1, flags: ['write'], keys: NO_KEYS, run: withCall(flush) },
  { name: 'flushdb', arity: -1, flags: ['write'], keys: NO_KEYS, run: withCall(flush) },
];
