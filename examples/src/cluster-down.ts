/** cluster:down: stops exactly the processes cluster:up recorded (SIGTERM, then SIGKILL after 10 s). */
import { stopCluster } from './cluster.js';

const stopped = await stopCluster();
if (stopped.length === 0) console.log('no cluster recorded in .dstore/cluster.json');
for (const proc of stopped) console.log(`stopped ${proc.id} (pid ${proc.pid})`);
