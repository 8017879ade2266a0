/**
 * cluster:bench: runs `dstore bench` against the recorded cluster and prints its latency report
 * (throughput, client p50/p99/p999, and each node's latency). Extra arguments go to `dstore bench`,
 * e.g. `pnpm cluster:bench --ops 200000 --concurrency 50`.
 */
import { spawnSync } from 'node:child_process';
import { cliPath, readState } from './cluster.js';

const state = readState();
if (!state) {
  console.error('no cluster recorded in .dstore/cluster.json: run `pnpm cluster:up` first');
  process.exit(1);
}
const extra = process.argv.slice(2).filter((arg) => arg !== '--');
const args = [
  cliPath('@dstore/client'),
  'bench',
  '--server',
  `${state.balancer.host}:${state.balancer.port}`,
  '--ops',
  '200000',
  '--concurrency',
  '50',
  '--value-size',
  '100',
  '--read-ratio',
  '0.5',
  ...extra,
];
const result = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(result.status ?? 1);
