import { request as httpRequest, type IncomingMessage } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { DASHBOARD_MAX_STREAMS } from '../src/dashboard-server.js';
import { Resources, startBalancer, waitFor } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

const TOKEN = 'dashboard-test-token';

/** A GET whose response is handed over as soon as its headers arrive (streams stay open). */
function open(port: number, path: string, headers: Record<string, string> = {}): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: '127.0.0.1', port, path, headers }, (response) => {
      resources.add(() => response.destroy());
      resolve(response);
    });
    request.once('error', reject);
    request.end();
  });
}

/** Reads a stream until it has sent an event named `name`; resolves with its parsed data. */
function nextEvent(response: IncomingMessage, name: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const onData = (chunk: Buffer): void => {
      buffer += chunk.toString();
      for (const block of buffer.split('\n\n').slice(0, -1)) {
        const lines = block.split('\n');
        if (lines[0] !== `event: ${name}`) continue;
        response.off('data', onData);
        resolve(
          JSON.parse(
            lines
              .slice(1)
              .map((line) => line.slice('data: '.length))
              .join(''),
          ),
        );
        return;
      }
    };
    response.on('data', onData);
    response.once('error', reject);
  });
}

const bearer = { authorization: `Bearer ${TOKEN}` };

describe('dashboard HTTP', () => {
  it('serves the page and its two files with their content types and a CSP that forbids outside requests', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const admin = `http://127.0.0.1:${balancer.address.adminPort}`;
    const page = await fetch(`${admin}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).toContain("script-src 'self'");
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    const html = await page.text();
    expect(html).not.toMatch(/https?:\/\//);
    const script = await fetch(`${admin}/dashboard/dashboard.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect((await script.text()).length).toBeGreaterThan(1000);
    const style = await fetch(`${admin}/dashboard/dashboard.css`);
    expect(style.headers.get('content-type')).toBe('text/css; charset=utf-8');
    await style.arrayBuffer();
  });

  it('serves nothing but its fixed files: no path traversal, no directory listing, no other method', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.adminPort;
    for (const path of [
      '/dashboard/../package.json',
      '/dashboard/%2e%2e/package.json',
      '/dashboard/..%2fpackage.json',
      '/dashboard/',
      '/dashboard',
      '/dashboard/dashboard.global.js',
      '//etc/passwd',
      '/index.html',
    ]) {
      const response = await open(port, path);
      response.resume();
      expect(response.statusCode, path).toBe(404);
    }
    const post = await fetch(`http://127.0.0.1:${port}/`, { method: 'POST' });
    expect(post.status).toBe(403); // mutating and no token configured, like every other POST
  });

  it('with --admin-auth all, the page and its stream need the token (401 without it)', async () => {
    const balancer = await startBalancer(resources, {
      replicationFactor: 1,
      adminToken: TOKEN,
      adminAuth: 'all',
    });
    const port = balancer.address.adminPort;
    for (const path of ['/', '/events', '/ring']) {
      const refused = await open(port, path);
      refused.resume();
      expect(refused.statusCode, path).toBe(401);
      const wrong = await open(port, path, { authorization: 'Bearer not-the-token' });
      wrong.resume();
      expect(wrong.statusCode, path).toBe(401);
    }
    // The shell without the token: 401, and nothing in it but the code that asks for the token.
    const shell = await fetch(`http://127.0.0.1:${port}/`);
    expect(shell.status).toBe(401);
    expect(await shell.text()).toContain('/dashboard/dashboard.js');
    expect((await fetch(`http://127.0.0.1:${port}/`, { headers: bearer })).status).toBe(200);
    // The page's own files are the package's code (no cluster data): a browser loads them first.
    const script = await open(port, '/dashboard/dashboard.js');
    script.resume();
    expect(script.statusCode).toBe(200);
    const stream = await open(port, '/events', bearer);
    expect(stream.statusCode).toBe(200);
    expect(stream.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    const hello = (await nextEvent(stream, 'hello')) as { operator: boolean; history: unknown[] };
    expect(hello.operator).toBe(true);
    expect(Array.isArray(hello.history)).toBe(true);
  });

  it('tells a stream without the token that it cannot act (the remove button stays hidden)', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1, adminToken: TOKEN });
    const stream = await open(balancer.address.adminPort, '/events');
    expect(stream.statusCode).toBe(200);
    expect(((await nextEvent(stream, 'hello')) as { operator: boolean }).operator).toBe(false);
    const snapshot = (await nextEvent(stream, 'snapshot')) as {
      balancer: { id: string; role: string };
      ring: { epoch: number };
      point: { t: number; ops: Record<string, number> };
    };
    expect(snapshot.balancer.role).toBe('coordinator');
    expect(snapshot.ring.epoch).toBe(balancer.epoch);
    expect(snapshot.point.ops).toHaveProperty('get');
  });

  it(`keeps at most ${DASHBOARD_MAX_STREAMS} streams open (503 past the cap) and frees a slot when one closes`, async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.adminPort;
    const streams: IncomingMessage[] = [];
    for (let index = 0; index < DASHBOARD_MAX_STREAMS; index++) {
      const stream = await open(port, '/events');
      expect(stream.statusCode).toBe(200);
      stream.resume();
      streams.push(stream);
    }
    const refused = await open(port, '/events');
    expect(refused.statusCode).toBe(503);
    expect(refused.headers['retry-after']).toBe('5');
    refused.resume();
    streams[0]!.destroy();
    await waitFor(async () => {
      const again = await open(port, '/events');
      again.destroy();
      return again.statusCode === 200;
    }, 'a free stream slot');
  });

  it('stops with streams open (they do not hold the admin server)', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const stream = await open(balancer.address.adminPort, '/events');
    const ended = new Promise<void>((resolve) => stream.once('close', () => resolve()));
    stream.resume();
    await balancer.stop();
    await ended;
  });
});
