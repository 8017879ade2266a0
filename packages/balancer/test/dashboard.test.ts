/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// The page functions below run in Chromium (puppeteer evaluates them there).
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Connection, connectSocket, Op } from '@dstore/protocol';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterEach, describe, expect, it } from 'vitest';
import { Resources, ringOf, spawnBalancer, spawnNode, waitForRing } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

const here = dirname(fileURLToPath(import.meta.url));
/** Screenshots for people, not assertions (gitignored; CI may keep them as artifacts). */
const ARTIFACTS = resolve(here, '../test-artifacts');
/** Debian's chromium (scripts/install-test-deps.sh); CHROMIUM_PATH overrides. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Debian's firefox-esr: not installed by CI (see the README); the Firefox case runs where it is. */
const FIREFOX = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';
const TOKEN = 'dashboard-browser-token';
/** Slow enough that a join's migration runs for a few seconds, so the page sees it. */
const MIGRATION_RATE = '300';
const KEYS = 3000;

const encoder = new TextEncoder();

async function launchBrowser(): Promise<Browser> {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Tests run as root in containers, where Chromium's sandbox cannot start.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
  resources.add(() => browser.close());
  return browser;
}

/**
 * Opens the dashboard, recording every request the page makes and aborting any that is not for
 * the balancer's admin origin (so nothing escapes even if one were made).
 */
async function openDashboard(browser: Browser, origin: string): Promise<{ page: Page; outside: string[] }> {
  const page = await browser.newPage();
  await page.setViewport({ width: 1920, height: 1080 });
  const outside: string[] = [];
  await page.setRequestInterception(true);
  page.on('request', (request) => {
    const url = request.url();
    if (url.startsWith(`${origin}/`) || url.startsWith('data:')) {
      void request.continue();
      return;
    }
    outside.push(url);
    void request.abort();
  });
  page.on('dialog', (dialog) => void dialog.accept());
  await page.goto(`${origin}/`);
  return { page, outside };
}

async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: resolve(ARTIFACTS, `${name}.png`) as `${string}.png`, fullPage: true });
}

/** Writes `count` keys through the balancer, 100 in flight. */
async function load(port: number, prefix: string, count: number): Promise<void> {
  const client = new Connection(await connectSocket({ host: '127.0.0.1', port }), {
    requestTimeoutMs: 10_000,
  });
  resources.add(() => client.destroy());
  for (let start = 0; start < count; start += 100) {
    const batch: Promise<unknown>[] = [];
    for (let index = start; index < Math.min(count, start + 100); index++) {
      batch.push(
        client.request({ op: Op.SET, key: encoder.encode(`${prefix}${index}`), value: encoder.encode('v') }),
      );
      batch.push(client.request({ op: Op.GET, key: encoder.encode(`${prefix}${index}`) }));
    }
    await Promise.all(batch);
  }
}

/** What a chart of the page holds. */
function chart(page: Page, title: string): Promise<{ points: number; series: string; total: number }> {
  return page.$eval(`[data-chart="${title}"]`, (element) => {
    const data = (element as HTMLElement).dataset;
    return { points: Number(data.points), series: data.series ?? '', total: Number(data.total) };
  });
}

describe('dashboard in a real browser', () => {
  it('shows the ring, the nodes and the traffic of a real cluster, a join from start to end, and removes a node', async () => {
    const balancer = await spawnBalancer(resources, ['--admin-token', TOKEN]);
    const nodeArgs = ['--migration-rate', MIGRATION_RATE];
    await spawnNode(resources, 'node-1', balancer.ready.port, nodeArgs);
    await spawnNode(resources, 'node-2', balancer.ready.port, nodeArgs);
    await waitForRing(balancer, ['node-1', 'node-2']);
    const origin = `http://127.0.0.1:${balancer.ready.adminPort}`;
    const browser = await launchBrowser();
    const { page, outside } = await openDashboard(browser, origin);

    // The node table and the ring say what /ring says.
    await page.waitForFunction(() => document.querySelectorAll('#nodes tbody tr').length === 2);
    const ring = await ringOf(balancer);
    const rows = await page.$$eval('#nodes tbody tr', (trs) =>
      trs.map((tr) => ({
        id: (tr as HTMLElement).dataset.node,
        cells: [...tr.querySelectorAll('td')].map((td) => td.textContent ?? ''),
      })),
    );
    expect(rows.map((row) => row.id)).toEqual(ring.nodes.map((node) => node.id));
    for (const node of ring.nodes) {
      const row = rows.find((candidate) => candidate.id === node.id)!;
      expect(row.cells[1]).toBe(node.id);
      expect(row.cells[3]).toBe(node.address);
      expect(row.cells[4]).toBe(`${node.status}, ${node.state}`);
    }
    const legend = await page.$$eval('.legend li', (items) =>
      items.map((item) => ({
        id: (item as HTMLElement).dataset.node,
        share: (item as HTMLElement).dataset.share,
      })),
    );
    expect(legend).toEqual(ring.nodes.map((node) => ({ id: node.id, share: node.share.toFixed(4) })));
    const owners = await page.$$eval('#ring path.arc', (paths) => [
      ...new Set(paths.map((path) => path.getAttribute('data-owner'))),
    ]);
    expect(owners.sort()).toEqual(
      ring.nodes
        .filter((node) => node.share > 0)
        .map((node) => node.id)
        .sort(),
    );
    expect(await page.$eval('#balancer', (element) => element.textContent)).toContain('(coordinator)');
    // Without the token the page cannot act.
    expect(await page.$$('button.remove')).toHaveLength(0);

    // Load: the charts receive points.
    await load(balancer.ready.port, 'k', KEYS);
    await page.waitForFunction(() => {
      const data = (document.querySelector('[data-chart="Requests by operation"]') as HTMLElement | null)
        ?.dataset;
      return data !== undefined && data.series?.includes('set') === true && Number(data.total) > 0;
    });
    expect((await chart(page, 'Requests by operation')).series.split(' ')).toEqual(
      expect.arrayContaining(['get', 'set']),
    );
    await page.waitForFunction(
      () =>
        Number((document.querySelector('[data-chart="Balancer latency"]') as HTMLElement).dataset.total) > 0,
    );
    await page.waitForFunction(
      () => Number((document.querySelector('[data-chart="Ops per node"]') as HTMLElement).dataset.total) > 0,
    );
    expect(await page.$('[data-chart="Errors per node"]')).not.toBeNull();
    await screenshot(page, 'dashboard-loaded');

    // A join: the transition appears (moving ranges drawn), then finishes with three nodes.
    await spawnNode(resources, 'node-3', balancer.ready.port, nodeArgs);
    await page.waitForFunction(
      () =>
        document.querySelector('#transition')?.getAttribute('data-state') === 'stream' &&
        Number((document.querySelector('#ring') as SVGElement | null)?.dataset.moving) > 0,
    );
    await screenshot(page, 'dashboard-transition');
    await page.waitForFunction(
      () =>
        document.querySelector('#transition')?.getAttribute('data-state') === 'idle' &&
        document.querySelectorAll('#nodes tbody tr').length === 3,
      { timeout: 60_000 },
    );
    await page.waitForFunction(
      () => Number((document.querySelector('[data-chart="Migration"]') as HTMLElement).dataset.total) > 0,
    );
    const events = await page.$eval('#events', (element) => element.textContent ?? '');
    expect(events).toContain('node node-3 joined');
    expect(events).toContain('transition finished');
    await screenshot(page, 'dashboard-joined');

    // With the token (typed into the form, kept in sessionStorage) the page removes a node.
    await page.type('#token-form input', TOKEN);
    await page.click('#token-form button');
    await page.waitForSelector('button.remove[data-remove="node-3"]');
    await page.click('button.remove[data-remove="node-3"]');
    await page.waitForFunction(() => document.querySelector('tr[data-node="node-3"]') === null, {
      timeout: 60_000,
    });
    await waitForRing(balancer, ['node-1', 'node-2']);
    expect(await page.$eval('.action-result', (element) => element.textContent)).toContain('removing node-3');
    await screenshot(page, 'dashboard-removed');

    // Readable on a laptop screen as at 1920x1080: nothing wider than the window.
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    await page.setViewport({ width: 1366, height: 768 });
    await page.waitForFunction(() => document.documentElement.scrollWidth <= window.innerWidth);
    await screenshot(page, 'dashboard-laptop');

    expect(outside).toEqual([]);
  }, 180_000);

  it('asks for the token when the balancer needs it for every endpoint', async () => {
    const balancer = await spawnBalancer(resources, ['--admin-token', TOKEN, '--admin-auth', 'all']);
    const origin = `http://127.0.0.1:${balancer.ready.adminPort}`;
    const browser = await launchBrowser();
    const page = await browser.newPage();
    // A browser navigation carries no Bearer header: the shell answers 401 and asks for the token.
    const refused = await page.goto(`${origin}/`);
    expect(refused?.status()).toBe(401);
    await page.waitForFunction(
      () => document.querySelector('#token-form')?.classList.contains('needed') === true,
    );
    expect(await page.$$('#nodes tbody tr')).toHaveLength(0);
    await page.type('#token-form input', TOKEN);
    await page.click('#token-form button');
    await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'live');
    await page.waitForFunction(
      () => document.querySelector('#token-form')?.classList.contains('operator') === true,
    );
    // A reload keeps the token for this tab (sessionStorage) and goes live again.
    await page.reload();
    await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'live');
    await screenshot(page, 'dashboard-token');
    await page.close();
  }, 60_000);
});

describe.runIf(existsSync(FIREFOX))('dashboard in a real Firefox', () => {
  it('draws the nodes, the ring and the charts from the stream, with no request outside the balancer', async () => {
    const balancer = await spawnBalancer(resources);
    await spawnNode(resources, 'node-1', balancer.ready.port);
    await spawnNode(resources, 'node-2', balancer.ready.port);
    await waitForRing(balancer, ['node-1', 'node-2']);
    const origin = `http://127.0.0.1:${balancer.ready.adminPort}`;
    const browser = await puppeteer.launch({ browser: 'firefox', executablePath: FIREFOX, headless: true });
    resources.add(() => browser.close());
    const page = await browser.newPage();
    const requests: string[] = [];
    page.on('request', (request) => requests.push(request.url()));
    await page.setViewport({ width: 1366, height: 768 });
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => document.querySelectorAll('#nodes tbody tr').length === 2);
    await load(balancer.ready.port, 'f', 500);
    await page.waitForFunction(
      () =>
        Number(
          (document.querySelector('[data-chart="Requests by operation"]') as HTMLElement).dataset.total,
        ) > 0,
    );
    const owners = await page.$$eval('#ring path.arc', (paths) => [
      ...new Set(paths.map((path) => path.getAttribute('data-owner'))),
    ]);
    expect(owners.sort()).toEqual(['node-1', 'node-2']);
    await screenshot(page, 'dashboard-firefox');
    expect(requests.filter((url) => !url.startsWith(`${origin}/`) && !url.startsWith('data:'))).toEqual([]);
  }, 120_000);
});
