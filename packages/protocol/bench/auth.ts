/**
 * The cost of authentication per connection: `pnpm --filter @dstore/protocol bench:auth`.
 *
 * One process, loopback: a FrameServer with an Authenticator, and connections opened one after the
 * other, each doing connect + handshake + one PING, then closed. Modes: no authentication (HELLO
 * only), a cluster peer (HMAC of the secret), a user whose SaltedKey is cached by the client (a
 * reconnect), and a user paying scrypt (N=2^14, r=8, p=1: a new client). Printed per mode: median
 * and p99 wall time per connection, CPU µs per connection (both sides: same process), and the ratio
 * to the unauthenticated mode measured in the same run. Bounded: BENCH_AUTH_CONNECTIONS (default
 * 200; 40 for scrypt) per mode.
 */

import { SaltedKeyCache } from '../src/auth.js';
import {
  Authenticator,
  type Connection,
  type Credentials,
  connectSocket,
  Connection as FrameConnection,
  FrameServer,
  handshake,
  Op,
  type Request,
  UserDirectory,
} from '../src/index.js';

const COUNT = Number(process.env.BENCH_AUTH_CONNECTIONS ?? 200);
const SECRET = 'bench-cluster-secret-0123456789';

interface Mode {
  readonly name: string;
  readonly role: 'client' | 'node';
  readonly credentials: Credentials | undefined;
  /** Share one SaltedKey cache across connections (a client reconnecting to the same server). */
  readonly cached: boolean;
  readonly connections: number;
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function main(): Promise<void> {
  const users = await UserDirectory.open({ token: 'bench-token' });
  let server: FrameServer | undefined;
  const authenticator = new Authenticator({
    role: 'node',
    serverId: () => 'bench',
    clusterSecret: SECRET,
    users,
    admit: (connection, kind) => server!.admit(connection, kind),
  });
  server = new FrameServer({
    requireAuthentication: true,
    onRequest: (request: Request, connection: Connection) => {
      if (request.op === Op.HELLO || request.op === Op.AUTH) authenticator.respond(connection, request);
      else connection.reply({ op: Op.OK, id: request.id });
    },
  });
  const open = new FrameServer({
    onRequest: (request: Request, connection: Connection) => {
      if (request.op === Op.HELLO) {
        connection.reply({
          op: Op.HELLO_OK,
          id: request.id,
          version: request.version,
          role: 'node',
          serverId: 'bench',
        });
      } else connection.reply({ op: Op.OK, id: request.id });
    },
  });
  const { port } = await server.listen();
  const openPort = (await open.listen()).port;
  const user: Credentials = { kind: 'user', user: 'default', password: 'bench-token' };
  const modes: Mode[] = [
    {
      name: 'no authentication (HELLO)',
      role: 'client',
      credentials: undefined,
      cached: false,
      connections: COUNT,
    },
    {
      name: 'peer: cluster secret (HMAC)',
      role: 'node',
      credentials: { kind: 'peer', secret: SECRET },
      cached: false,
      connections: COUNT,
    },
    {
      name: 'user: reconnect (SaltedKey cached)',
      role: 'client',
      credentials: user,
      cached: true,
      connections: COUNT,
    },
    {
      name: 'user: new client (scrypt N=2^14)',
      role: 'client',
      credentials: user,
      cached: false,
      connections: Math.min(COUNT, 40),
    },
  ];
  const rows: { name: string; p50: number; p99: number; cpuUs: number }[] = [];
  for (const mode of modes) {
    const cache = new SaltedKeyCache();
    const target = mode.credentials === undefined ? openPort : port;
    const walls: number[] = [];
    const cpuStart = process.cpuUsage();
    for (let i = 0; i < mode.connections; i++) {
      const started = performance.now();
      const socket = await connectSocket({ host: '127.0.0.1', port: target });
      const connection = new FrameConnection(socket);
      await handshake(connection, mode.role, {
        credentials: mode.credentials,
        ...(mode.cached ? { cache } : {}),
      });
      await connection.request({ op: Op.PING });
      walls.push(performance.now() - started);
      connection.destroy();
    }
    const cpu = process.cpuUsage(cpuStart);
    walls.sort((a, b) => a - b);
    rows.push({
      name: mode.name,
      p50: percentile(walls, 0.5),
      p99: percentile(walls, 0.99),
      cpuUs: (cpu.user + cpu.system) / mode.connections,
    });
  }
  const base = rows[0]!;
  console.log(
    `connections per mode: ${COUNT} (scrypt mode: ${Math.min(COUNT, 40)}); node ${process.version}\n`,
  );
  console.log(
    '| mode | p50 ms / connection | p99 ms | CPU µs / connection (client + server) | CPU vs no auth |',
  );
  console.log('|---|---:|---:|---:|---:|');
  for (const row of rows) {
    console.log(
      `| ${row.name} | ${row.p50.toFixed(2)} | ${row.p99.toFixed(2)} | ${Math.round(row.cpuUs)} | ${(row.cpuUs / base.cpuUs).toFixed(2)}x |`,
    );
  }
  await server.close(100);
  await open.close(100);
}

void main();
