import { FakeServer } from '@dstore/protocol/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { closeDefaultClient, dget, dset, getDefaultClient } from '../src/index.js';
import { failOnUnhandledRejections } from './helpers/unhandled.js';

failOnUnhandledRejections();

let server: FakeServer | undefined;
const savedUrl = process.env.DSTORE_URL;

afterEach(async () => {
  await closeDefaultClient();
  await server?.stop();
  server = undefined;
  if (savedUrl === undefined) delete process.env.DSTORE_URL;
  else process.env.DSTORE_URL = savedUrl;
});

describe('dset / dget', () => {
  it('use one default client configured from DSTORE_URL', async () => {
    server = new FakeServer();
    await server.start();
    process.env.DSTORE_URL = server.url;
    await dset('greeting', 'héllo');
    expect(await dget('greeting')).toBe('héllo');
    expect(await dget('missing')).toBeNull();
    expect(getDefaultClient()).toBe(getDefaultClient());
    expect(getDefaultClient().address).toBe(server.address);
  });

  it('closeDefaultClient lets the next call create a fresh client', async () => {
    server = new FakeServer();
    await server.start();
    process.env.DSTORE_URL = server.url;
    const first = getDefaultClient();
    await closeDefaultClient();
    expect(first.status).toBe('closed');
    expect(getDefaultClient()).not.toBe(first);
    await dset('k', new Uint8Array([104, 105]));
    expect(await dget('k')).toBe('hi');
  });
});
