import type { LatencySummary } from '@dstore/protocol';
import type { BenchReport } from './runner.js';

/** Microseconds as milliseconds with three decimals, the unit every report line uses. */
export function formatMs(micros: number): string {
  return `${(micros / 1000).toFixed(3)} ms`;
}

/** Lays out rows as left-aligned columns separated by two spaces. */
export function formatTable(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) {
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  }
  return rows
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function latencyCells(summary: LatencySummary): string[] {
  return [summary.meanUs, summary.p50Us, summary.p99Us, summary.p999Us, summary.maxUs].map(formatMs);
}

/** The human-readable bench report: throughput, client latency per op, errors, node latency. */
export function formatBenchReport(report: BenchReport): string {
  const { config } = report;
  const lines: string[] = [];
  const readPercent = Math.round(config.readRatio * 100);
  lines.push(
    `dstore bench: ${report.ops} ops (${readPercent}% get / ${100 - readPercent}% set), ` +
      `${config.valueSize}-byte values, ${config.keyspace} keys ${config.distribution}, ` +
      `concurrency ${config.concurrency}, ${config.clients} connection${config.clients === 1 ? '' : 's'}` +
      `, routing ${config.routing ?? 'balancer'}`,
  );
  lines.push(`preloaded ${report.preloaded} keys in ${report.preloadS.toFixed(2)} s`);
  if (report.routing !== undefined) {
    lines.push(
      `routed      ${report.routing.direct} direct, ${report.routing.viaBalancer} via the balancer, ${report.routing.redirects} redirects`,
    );
  }
  lines.push('');
  lines.push(
    `throughput  ${Math.round(report.throughput)} ops/s (${report.ops} ops in ${report.durationS.toFixed(2)} s)`,
    '',
  );
  const rows: string[][] = [['client latency', 'ops', 'avg', 'p50', 'p99', 'p999', 'max']];
  rows.push(['all', String(report.latency.count), ...latencyCells(report.latency)]);
  for (const type of ['get', 'set'] as const) {
    const summary = report.byOp[type];
    if (summary.ops > 0) rows.push([type, String(summary.count), ...latencyCells(summary)]);
  }
  lines.push(formatTable(rows), '');
  lines.push(`gets        ${report.hits} hits, ${report.misses} misses`);
  if (report.deleted !== undefined) lines.push(`cleanup     ${report.deleted} keys deleted`);
  const errorEntries = Object.entries(report.errors);
  lines.push(
    `errors      ${errorEntries.length === 0 ? 'none' : errorEntries.map(([code, count]) => `${code} ${count}`).join(', ')}`,
  );
  if (report.nodes.length > 0) {
    lines.push('');
    const nodeRows: string[][] = [
      ['node latency', 'status', 'keys', 'requests', 'avg', 'p50', 'p99', 'p999', 'max'],
    ];
    for (const node of report.nodes) {
      const latency = node.latency;
      nodeRows.push([
        node.id,
        node.status,
        node.keys === undefined ? '-' : String(node.keys),
        latency ? String(latency.count) : '-',
        ...(latency ? latencyCells(latency) : ['-', '-', '-', '-', '-']),
      ]);
    }
    lines.push(formatTable(nodeRows));
  }
  return lines.join('\n');
}
