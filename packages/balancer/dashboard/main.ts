/**
 * The dstore admin dashboard: one stream from the balancer (`/events`), drawn with plain DOM, SVG
 * for the ring and uPlot for the time series. Every value from the cluster is set as text (never
 * as HTML): node ids and reasons come from the network.
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './style.css';
import type { HistoryPoint, RingSlots, Snapshot } from './types.js';

/** Points kept by the page: 15 minutes at one a second, like the balancer. */
const MAX_POINTS = 900;
/** sessionStorage key of the admin token: gone when the tab closes, never sent to another origin. */
const TOKEN_KEY = 'dstore-admin-token';
const RECONNECT_MS = 2000;
const SVG = 'http://www.w3.org/2000/svg';
const PALETTE = [
  '#4e79a7',
  '#f28e2b',
  '#59a14f',
  '#e15759',
  '#76b7b2',
  '#edc948',
  '#b07aa1',
  '#ff9da7',
  '#9c755f',
  '#8cd17d',
  '#499894',
  '#d37295',
];

/** Creates an element with a class and optional text. */
function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = '',
  text = '',
): HTMLElementTagNameMap[K] {
  const created = document.createElement(tag);
  if (className !== '') created.className = className;
  if (text !== '') created.textContent = text;
  return created;
}

/** A stable colour per node id (the same on every page and every balancer). */
function colourOf(id: string): string {
  let hash = 0;
  for (let index = 0; index < id.length; index++) hash = (hash * 31 + id.charCodeAt(index)) >>> 0;
  return PALETTE[hash % PALETTE.length] ?? '#888';
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function formatLatencyUs(us: number | undefined): string {
  return us === undefined || us < 0 ? '–' : `${(us / 1000).toFixed(2)}`;
}

/** The page's fixed layout; every view fills its own part. */
interface Layout {
  readonly status: HTMLElement;
  readonly balancer: HTMLElement;
  readonly tokenForm: HTMLFormElement;
  readonly tokenInput: HTMLInputElement;
  readonly ring: SVGSVGElement;
  readonly ringLegend: HTMLElement;
  readonly map: HTMLElement;
  readonly nodes: HTMLTableSectionElement;
  readonly actionResult: HTMLElement;
  readonly events: HTMLElement;
  readonly charts: HTMLElement;
}

function buildLayout(): Layout {
  const header = element('header');
  header.append(element('h1', '', 'dstore'));
  const balancer = element('span', 'balancer', 'connecting…');
  balancer.id = 'balancer';
  const status = element('span', 'status');
  status.id = 'status';
  const tokenForm = element('form', 'token');
  tokenForm.id = 'token-form';
  const tokenInput = element('input');
  tokenInput.type = 'password';
  tokenInput.name = 'token';
  tokenInput.placeholder = 'admin token';
  tokenInput.autocomplete = 'off';
  const tokenButton = element('button', '', 'Use token');
  tokenButton.type = 'submit';
  tokenForm.append(tokenInput, tokenButton);
  header.append(balancer, status, tokenForm);

  const main = element('main');
  const ringPanel = panel('Ring');
  const ring = document.createElementNS(SVG, 'svg');
  ring.setAttribute('viewBox', '0 0 300 300');
  ring.id = 'ring';
  const ringLegend = element('ul', 'legend');
  ringPanel.append(ring, ringLegend);
  const mapPanel = panel('Cluster map');
  const map = element('div', 'map');
  map.id = 'map';
  const events = element('ol', 'events');
  events.id = 'events';
  mapPanel.append(map, element('h3', '', 'Membership events'), events);
  const nodesPanel = panel('Nodes');
  nodesPanel.classList.add('wide');
  const table = element('table');
  table.id = 'nodes';
  const head = table.createTHead().insertRow();
  for (const title of [
    '',
    'node',
    'identity',
    'address',
    'state',
    'keys',
    'storage',
    'ops/s',
    'p50 ms',
    'p99 ms',
    'heartbeat',
    'degraded',
    '',
  ]) {
    head.append(element('th', '', title));
  }
  const nodes = table.createTBody();
  const actionResult = element('p', 'action-result');
  nodesPanel.append(table, actionResult);
  const chartsPanel = panel('Last 15 minutes');
  chartsPanel.classList.add('wide');
  const charts = element('div', 'charts');
  chartsPanel.append(charts);
  main.append(ringPanel, mapPanel, nodesPanel, chartsPanel);
  document.body.append(header, main);
  return {
    status,
    balancer,
    tokenForm,
    tokenInput,
    ring,
    ringLegend,
    map,
    nodes,
    actionResult,
    events,
    charts,
  };
}

function panel(title: string): HTMLElement {
  const section = element('section', 'panel');
  section.append(element('h2', '', title));
  return section;
}

/** One uPlot chart whose series are the keys `extract` returns (recreated when they change). */
class TimeChart {
  private plot: uPlot | undefined;
  private names: string[] = [];
  readonly container: HTMLElement;

  constructor(
    parent: HTMLElement,
    private readonly title: string,
    private readonly unit: string,
    private readonly extract: (point: HistoryPoint) => Readonly<Record<string, number>>,
    private readonly colour: (name: string, index: number) => string,
    /** A series absent from a point is 0 there (errors), not a gap (a node that did not answer). */
    private readonly absentIsZero = false,
  ) {
    this.container = element('div', 'chart');
    this.container.dataset.chart = title;
    parent.append(this.container);
  }

  /** Redraws from the page's points. */
  update(points: readonly HistoryPoint[]): void {
    const values = points.map((point) => this.extract(point));
    const names = [...new Set(values.flatMap((value) => Object.keys(value)))].sort();
    const data: uPlot.AlignedData = [
      points.map((point) => point.t),
      ...names.map((name) => values.map((value) => value[name] ?? (this.absentIsZero ? 0 : null))),
    ];
    // What the chart holds, for tests and for anyone inspecting the page.
    this.container.dataset.points = String(points.length);
    this.container.dataset.series = names.join(' ');
    this.container.dataset.total = String(
      values.reduce((sum, value) => sum + Object.values(value).reduce((a, b) => a + Math.max(0, b), 0), 0),
    );
    if (this.plot === undefined || names.join('\u0000') !== this.names.join('\u0000')) {
      this.plot?.destroy();
      this.names = names;
      this.plot = new uPlot(this.options(names), data, this.container);
      return;
    }
    this.plot.setData(data);
  }

  /** Fits the chart to its container's width. */
  resize(): void {
    this.plot?.setSize({ width: this.width(), height: 180 });
  }

  private width(): number {
    return Math.max(280, this.container.clientWidth - 8);
  }

  private options(names: readonly string[]): uPlot.Options {
    return {
      title: this.title,
      width: this.width(),
      height: 180,
      cursor: { drag: { x: false, y: false } },
      scales: { y: { range: (_plot, min, max) => [Math.min(0, min), Math.max(1, max)] } },
      axes: [{}, { label: this.unit, size: 56 }],
      series: [
        {},
        ...names.map((name, index) => ({
          label: name,
          stroke: this.colour(name, index),
          width: 1.5,
          spanGaps: false,
        })),
      ],
    };
  }
}

/** Everything the page knows: the points it draws, the latest snapshot, the token. */
class Dashboard {
  private points: HistoryPoint[] = [];
  private snapshot: Snapshot | undefined;
  private operator = false;
  /** The ring's arcs: sent in the hello, then again only when the ring changes. */
  private arcs: readonly RingArc[] = [];

  private readonly charts: TimeChart[];
  private stream: AbortController | undefined;

  constructor(private readonly layout: Layout) {
    const opColour = (_name: string, index: number): string => PALETTE[index % PALETTE.length] ?? '#888';
    const nodeColour = (name: string): string => colourOf(name);
    this.charts = [
      new TimeChart(layout.charts, 'Requests by operation', 'ops/s', (point) => point.ops, opColour),
      new TimeChart(layout.charts, 'Errors by code', 'errors/s', (point) => point.errors, opColour, true),
      new TimeChart(
        layout.charts,
        'Balancer latency',
        'ms',
        (point): Record<string, number> => (point.p50Ms < 0 ? {} : { p50: point.p50Ms, p99: point.p99Ms }),
        opColour,
      ),
      new TimeChart(
        layout.charts,
        'Migration',
        'keys/s',
        (point) => ({ 'keys moved': point.migrationKeys }),
        opColour,
      ),
      new TimeChart(layout.charts, 'Ops per node', 'ops/s', (point) => perNode(point, 'ops'), nodeColour),
      new TimeChart(
        layout.charts,
        'Ops per node by operation',
        'ops/s',
        nodeOpSeries,
        seriesNodeColour,
        true,
      ),
      new TimeChart(layout.charts, 'Latency per node', 'ms', nodeLatencySeries, seriesNodeColour),
      new TimeChart(
        layout.charts,
        'Migration per node',
        'keys/s',
        (point) => perNode(point, 'migrationKeys'),
        nodeColour,
        true,
      ),
      new TimeChart(layout.charts, 'Errors per node', 'errors/s', nodeErrorSeries, seriesNodeColour, true),
    ];
    layout.tokenForm.addEventListener('submit', (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, layout.tokenInput.value);
      layout.tokenInput.value = '';
      this.connect();
    });
    layout.nodes.addEventListener('click', (event) => this.onTableClick(event));
    window.addEventListener('resize', () => {
      for (const chart of this.charts) chart.resize();
    });
  }

  /** Opens the stream (closing the previous one); reconnects when it ends. */
  connect(): void {
    this.stream?.abort();
    const controller = new AbortController();
    this.stream = controller;
    this.read(controller).catch((error: unknown) => {
      if (controller.signal.aborted) return;
      this.setStatus(`disconnected (${(error as Error).message}); retrying`, 'bad');
      setTimeout(() => {
        if (this.stream === controller) this.connect();
      }, RECONNECT_MS);
    });
  }

  /** Reads Server-Sent Events from a fetch body (EventSource cannot send the Bearer header). */
  private async read(controller: AbortController): Promise<void> {
    const response = await fetch('/events', {
      headers: this.authHeaders(),
      cache: 'no-store',
      signal: controller.signal,
    });
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      this.setStatus('this balancer needs the admin token', 'bad');
      this.layout.tokenForm.classList.add('needed');
      this.layout.tokenInput.focus();
      return;
    }
    if (!response.ok || response.body === null) throw new Error(`HTTP ${response.status}`);
    this.setStatus('live', 'ok');
    this.layout.tokenForm.classList.remove('needed');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) throw new Error('stream ended');
      buffer += value;
      let end = buffer.indexOf('\n\n');
      while (end >= 0) {
        this.onEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        end = buffer.indexOf('\n\n');
      }
    }
  }

  private onEvent(block: string): void {
    let name = 'message';
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) name = line.slice(7);
      else if (line.startsWith('data: ')) data += line.slice(6);
    }
    if (name === 'hello') {
      const hello = JSON.parse(data) as { operator: boolean; ringSlots: RingSlots; history: HistoryPoint[] };
      this.operator = hello.operator;
      this.arcs = arcsOf(hello.ringSlots);
      this.layout.tokenForm.classList.toggle('operator', hello.operator);
      this.points = hello.history.slice(-MAX_POINTS);
    } else if (name === 'snapshot') {
      const snapshot = JSON.parse(data) as Snapshot;
      this.snapshot = snapshot;
      if (snapshot.ringSlots !== undefined) this.arcs = arcsOf(snapshot.ringSlots);
      this.points.push(snapshot.point);
      if (this.points.length > MAX_POINTS) this.points.splice(0, this.points.length - MAX_POINTS);
      this.render(snapshot);
    }
  }

  private authHeaders(): Record<string, string> {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token === null || token === '' ? {} : { authorization: `Bearer ${token}` };
  }

  private setStatus(text: string, kind: 'ok' | 'bad'): void {
    this.layout.status.textContent = text;
    this.layout.status.dataset.kind = kind;
  }

  private render(snapshot: Snapshot): void {
    const { map } = snapshot.ring;
    this.layout.balancer.textContent = `balancer ${snapshot.balancer.id} (${snapshot.balancer.role}) at ${location.host}`;
    document.title = `dstore · ${snapshot.balancer.id} · epoch ${map.epoch}`;
    renderRing(this.layout, snapshot, this.arcs);
    renderMap(this.layout.map, snapshot);
    renderEvents(this.layout.events, snapshot);
    renderNodes(this.layout.nodes, snapshot, this.operator);
    for (const chart of this.charts) chart.update(this.points);
  }

  private onTableClick(event: Event): void {
    const target = event.target;
    if (!(target instanceof HTMLButtonElement) || target.dataset.remove === undefined) return;
    const id = target.dataset.remove;
    if (!confirm(`Remove node ${id}? Its keys move to the other nodes first, then it leaves the ring.`))
      return;
    this.removeNode(id).catch((error: unknown) => {
      this.layout.actionResult.textContent = `remove ${id} failed: ${(error as Error).message}`;
    });
  }

  /** Through the admin API, with the same token as the stream. */
  private async removeNode(id: string): Promise<void> {
    const response = await fetch(`/nodes/${encodeURIComponent(id)}/remove`, {
      method: 'POST',
      headers: this.authHeaders(),
    });
    const body = (await response.json()) as { error?: string; status?: string };
    this.layout.actionResult.textContent =
      response.status === 202
        ? `removing ${id}: its keys are moving`
        : `remove ${id}: ${body.error ?? response.status}`;
  }

  /** The latest snapshot (for debugging from the console). */
  get latest(): Snapshot | undefined {
    return this.snapshot;
  }
}

/** The colour of a "<node> <what>" series: its node's. */
function seriesNodeColour(name: string): string {
  return colourOf(name.slice(0, name.lastIndexOf(' ')));
}

/** One series per node and operation ("node-1 get"), from the nodes' STATS; 0 where absent. */
function nodeOpSeries(point: HistoryPoint): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [id, sample] of Object.entries(point.nodes)) {
    // Only the operations a node served in the window: no legend entry for idle ones.
    for (const [op, rate] of Object.entries(sample.opsByOp ?? {})) if (rate > 0) out[`${id} ${op}`] = rate;
  }
  return out;
}

/** p50 and p99 of each node ("node-1 p99", ms), from the nodes' own histograms. */
function nodeLatencySeries(point: HistoryPoint): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [id, sample] of Object.entries(point.nodes)) {
    if (sample.p50Us >= 0) out[`${id} p50`] = sample.p50Us / 1000;
    if (sample.p99Us >= 0) out[`${id} p99`] = sample.p99Us / 1000;
  }
  return out;
}

/** One series per node and error code ("node-2 TIMEOUT"), in the node's colour. */
function nodeErrorSeries(point: HistoryPoint): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [id, codes] of Object.entries(point.nodeErrors ?? {})) {
    for (const [code, rate] of Object.entries(codes)) out[`${id} ${code}`] = rate;
  }
  return out;
}

/** One series per node: `field` of its sample (ops/s or migration keys/s). */
function perNode(point: HistoryPoint, field: 'ops' | 'migrationKeys'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [id, sample] of Object.entries(point.nodes)) {
    const value = sample[field];
    if (value >= 0) out[id] = value;
  }
  return out;
}

/** One arc of the ring drawing: `owner` owns the circle from `start` to `end` (fractions). */
interface RingArc {
  readonly owner: string;
  readonly start: number;
  readonly end: number;
}

/** Merges runs of slots with the same owner into arcs. */
function arcsOf(ring: RingSlots): RingArc[] {
  const arcs: RingArc[] = [];
  const count = ring.slots.length;
  let start = 0;
  for (let slot = 1; slot <= count; slot++) {
    if (slot < count && ring.slots[slot] === ring.slots[start]) continue;
    arcs.push({ owner: ring.owners[ring.slots[start] ?? 0] ?? '', start: start / count, end: slot / count });
    start = slot;
  }
  return arcs;
}

/** A point on the ring circle at `fraction` of the hash space (0 at the top, clockwise). */
function polar(fraction: number, radius: number): [number, number] {
  const angle = fraction * 2 * Math.PI - Math.PI / 2;
  return [150 + radius * Math.cos(angle), 150 + radius * Math.sin(angle)];
}

function arcPath(start: number, end: number, radius: number): string {
  // A full circle cannot be one SVG arc: stop just short of it.
  const stop = end - start >= 1 ? start + 0.99999 : end;
  const [x1, y1] = polar(start, radius);
  const [x2, y2] = polar(stop, radius);
  const large = stop - start > 0.5 ? 1 : 0;
  return `M ${x1.toFixed(2)} ${y1.toFixed(2)} A ${radius} ${radius} 0 ${large} 1 ${x2.toFixed(2)} ${y2.toFixed(2)}`;
}

function svgElement(tag: string, attributes: Record<string, string>): SVGElement {
  const created = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) created.setAttribute(name, value);
  return created;
}

function renderRing(layout: Layout, snapshot: Snapshot, arcs: readonly RingArc[]): void {
  const parts: SVGElement[] = [svgElement('circle', { cx: '150', cy: '150', r: '110', class: 'track' })];
  for (const arc of arcs) {
    const path = svgElement('path', {
      d: arcPath(arc.start, arc.end, 110),
      stroke: colourOf(arc.owner),
      class: 'arc',
      'data-owner': arc.owner,
    });
    path.append(svgElement('title', {}));
    path.lastChild!.textContent = arc.owner;
    parts.push(path);
  }
  // A vnode ring interleaves thin arcs; the inner ring sums each node's share in one segment.
  let shareStart = 0;
  for (const node of snapshot.ring.nodes) {
    if (node.share <= 0) continue;
    parts.push(
      svgElement('path', {
        d: arcPath(shareStart, shareStart + node.share, 78),
        stroke: colourOf(node.id),
        class: 'share',
        'data-share-of': node.id,
      }),
    );
    shareStart += node.share;
  }
  for (const range of snapshot.moving) {
    parts.push(svgElement('path', { d: arcPath(range.start, range.end, 134), class: 'moving' }));
  }
  const centre = svgElement('text', { x: '150', y: '148', class: 'centre' });
  centre.textContent = `epoch ${snapshot.ring.map.epoch}`;
  const sub = svgElement('text', { x: '150', y: '166', class: 'centre small' });
  sub.textContent = `${snapshot.ring.nodes.length} nodes · ${snapshot.ring.algorithm}`;
  parts.push(centre, sub);
  layout.ring.replaceChildren(...parts);
  layout.ring.dataset.moving = String(snapshot.moving.length);
  layout.ringLegend.replaceChildren(
    ...snapshot.ring.nodes.map((node) => {
      const item = element('li');
      item.dataset.node = node.id;
      item.dataset.share = node.share.toFixed(4);
      const swatch = element('span', 'swatch');
      swatch.style.background = colourOf(node.id);
      item.append(swatch, document.createTextNode(`${node.id} ${(node.share * 100).toFixed(1)} %`));
      return item;
    }),
  );
}

function definition(list: HTMLElement, term: string, value: string, key = ''): void {
  const row = element('div', 'row');
  if (key !== '') row.dataset.key = key;
  row.append(element('dt', '', term), element('dd', '', value));
  list.append(row);
}

function renderMap(container: HTMLElement, snapshot: Snapshot): void {
  const { map, migration } = snapshot.ring;
  const list = element('dl');
  definition(list, 'epoch', String(map.epoch), 'epoch');
  definition(list, 'ring epoch', String(map.ringEpoch));
  definition(list, 'cluster', map.cluster);
  definition(list, 'store', map.location === map.store ? map.store : `${map.store} ${map.location}`);
  definition(list, 'coordinator', map.coordinator ?? '–');
  definition(list, 'this balancer', `${snapshot.balancer.id}, ${map.role}`);
  const parts: HTMLElement[] = [list];
  const transition = map.transition;
  const progress = element('div', 'transition');
  progress.id = 'transition';
  if (transition === null) {
    progress.dataset.state = 'idle';
    progress.textContent = `no transition; last migration moved ${migration.keysMoved} keys`;
  } else {
    progress.dataset.state = transition.phase;
    const done = migration.totalRanges - migration.pendingRanges;
    const elapsed = (Date.now() - Date.parse(transition.startedAt)) / 1000;
    const eta =
      done > 0 && migration.pendingRanges > 0 ? (elapsed * migration.pendingRanges) / done : Number.NaN;
    progress.append(
      element('strong', '', `transition: ${transition.phase} (${transition.reason})`),
      element(
        'p',
        '',
        `${done}/${migration.totalRanges} ranges, ${migration.keysMoved} keys, ${Math.round(migration.keysPerSecond)} keys/s, ` +
          `running ${formatDuration(elapsed)}, ETA ${formatDuration(eta)}`,
      ),
    );
    const bar = element('progress');
    bar.max = Math.max(1, migration.totalRanges);
    bar.value = done;
    progress.append(bar);
    if (migration.stalled !== null) {
      progress.append(element('p', 'bad', `stalled: ${migration.stalled.from} → ${migration.stalled.to}`));
    }
  }
  parts.push(progress);
  container.replaceChildren(...parts);
}

function renderEvents(list: HTMLElement, snapshot: Snapshot): void {
  list.replaceChildren(
    ...[...snapshot.events].reverse().map((event) => {
      const item = element('li');
      item.append(
        element('time', '', new Date(event.at).toLocaleTimeString()),
        document.createTextNode(` ${event.text}`),
      );
      return item;
    }),
  );
}

function renderNodes(body: HTMLTableSectionElement, snapshot: Snapshot, operator: boolean): void {
  const rows = snapshot.ring.nodes.map((node) => {
    const row = element('tr');
    row.dataset.node = node.id;
    row.dataset.status = node.status;
    const sample = snapshot.point.nodes[node.id];
    const age = snapshot.heartbeatAgeMs[node.id] ?? -1;
    const swatch = element('span', 'swatch');
    swatch.style.background = colourOf(node.id);
    const colourCell = element('td');
    colourCell.append(swatch);
    const storage = node.storage === undefined ? '–' : `${formatBytes(node.storage.usedBytes)} used`;
    const cells = [
      node.id,
      node.identity === '' ? '–' : node.identity.slice(0, 12),
      node.address,
      `${node.status}, ${node.state}`,
      String(node.keys),
      storage,
      sample === undefined ? '–' : String(sample.ops),
      formatLatencyUs(sample?.p50Us),
      formatLatencyUs(sample?.p99Us),
      age < 0 ? '–' : `${(age / 1000).toFixed(1)} s ago`,
      node.storage?.state === 'degraded' ? node.storage.reason : '',
    ];
    row.append(colourCell, ...cells.map((text) => element('td', '', text)));
    row.children[4]?.classList.add(node.status === 'up' ? 'ok' : 'bad');
    const actions = element('td');
    if (operator && node.state !== 'leaving') {
      const remove = element('button', 'remove', 'Remove');
      remove.dataset.remove = node.id;
      actions.append(remove);
    }
    row.append(actions);
    return row;
  });
  body.replaceChildren(...rows);
}

const dashboard = new Dashboard(buildLayout());
dashboard.connect();
