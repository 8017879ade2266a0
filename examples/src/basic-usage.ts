/**
 * The smallest program that uses @dstore/client: connect to a balancer, write, read, delete.
 * Run it against a cluster: `pnpm cluster:up && pnpm --filter @dstore/examples example:basic`.
 */
import { createClient } from '@dstore/client';

const url = process.env.DSTORE_URL ?? 'dstore://127.0.0.1:7379';
const client = createClient(url);
try {
  await client.set('greeting', 'hello from dstore');
  console.log('get greeting ->', await client.getString('greeting'));
  await client.mset({ a: '1', b: '2' });
  const values = await client.mget(['a', 'b', 'missing']);
  console.log(
    'mget a b missing ->',
    values.map((value) => (value ? Buffer.from(value).toString() : null)),
  );
  console.log('del greeting ->', await client.del('greeting'));
  console.log('get greeting ->', await client.getString('greeting'));
} finally {
  await client.close();
}
