/** The RESP port of a TLS balancer: TLS only (redis-cli --tls), a plaintext client gets one error. */
import { createTestPki } from '@dstore/protocol/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import { Resources, startBalancer, temporaryDir } from './helpers.js';
import { redisCli } from './resp-helpers.js';

const resources = new Resources();
let balancer: Balancer;
let caFile: string;

beforeAll(async () => {
  const pki = createTestPki(temporaryDir(resources, 'resp-tls-'));
  caFile = pki.ca.certFile;
  balancer = await startBalancer(resources, {
    replicationFactor: 1,
    respPort: 0,
    tls: { cert: pki.peer.cert, key: pki.peer.key, ca: pki.ca.cert },
  });
}, 60_000);
afterAll(() => resources.releaseAll());

describe('RESP over TLS', () => {
  it('serves redis-cli --tls and refuses plaintext with one error', async () => {
    const port = String(balancer.address.respPort);
    expect(await redisCli(Number(port), '--tls', '--cacert', caFile, 'PING')).toBe('PONG');
    // No node yet: the key's owner is missing, answered at once in Redis's terms.
    expect(await redisCli(Number(port), '--tls', '--cacert', caFile, 'GET', 'k')).toMatch(
      /^CLUSTERDOWN UNAVAILABLE: the ring has no nodes/,
    );
    expect(await redisCli(Number(port), 'PING').catch((error: Error) => error.message)).toMatch(/TLS/);
  });
});
