/**
 * cluster:up: starts 3 storage nodes (LMDB, data under .dstore/data) and a balancer in the
 * background, records their PIDs and ports in .dstore/cluster.json, and prints where they are.
 */
import { startCluster } from './cluster.js';

const state = await startCluster({
  detached: true,
  port: Number(process.env.DSTORE_PORT ?? 7379),
  adminPort: Number(process.env.DSTORE_ADMIN_PORT ?? 7380),
  engine: process.env.DSTORE_ENGINE === 'memory' ? 'memory' : 'lmdb',
});
console.log(
  `balancer  pid ${state.balancer.pid}  dstore://${state.balancer.host}:${state.balancer.port}  admin http://${state.balancer.host}:${state.balancer.adminPort}`,
);
for (const node of state.nodes) {
  console.log(
    `${node.id.padEnd(9)} pid ${node.pid}  ${node.host}:${node.port}  data ${node.dataDir ?? '(memory)'}`,
  );
}
console.log(
  `replication factor: the balancer's default (3: every key on all 3 nodes) for a new map, the stored one otherwise`,
);
console.log(`state: ${state.root}/cluster.json  logs: ${state.root}/logs/`);
