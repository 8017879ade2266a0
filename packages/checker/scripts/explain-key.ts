/**
 * Diagnostics: checks a saved history (JSONL, or the JSON array the balancer tests write), and for
 * each illegal key prints its operations around the failure with the `map` nemesis events
 * interleaved (epoch, phase, routed epoch, the key's chain: serving|path).
 *
 *   pnpm --filter @dstore/checker explain-key <history> [window ms] [key]
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { checkHistory, formatCheckResult, type HistoryEvent, parseHistory } from '../src/index.js';

const [file, windowText, onlyKey] = process.argv.slice(2);
if (file === undefined) throw new Error('usage: explain-key <history> [window ms] [key]');
// pnpm --filter runs in the package's folder: a relative path is the caller's.
const text = readFileSync(resolve(process.env.INIT_CWD ?? process.cwd(), file), 'utf8');
const events: HistoryEvent[] = text.trimStart().startsWith('[') ? JSON.parse(text) : parseHistory(text);
const result = checkHistory(events, { timeLimitMs: 60_000 });
console.log(formatCheckResult(result).replace(/\[object Object\]/g, ''));
const windowMs = Number(windowText ?? 400);
const keys = onlyKey !== undefined ? [onlyKey] : result.illegal.map((key) => key.key);
for (const key of keys) {
  const blockedAt = result.keys.find((k) => k.key === key)?.blockedAt ?? 0;
  console.log(`\n=== ${key} around ${blockedAt.toFixed(1)} (±${windowMs} ms)`);
  const open = new Map<number, HistoryEvent>();
  for (const event of events) {
    if (event.time < blockedAt - windowMs || event.time > blockedAt + windowMs) {
      if (typeof event.process === 'number' && event.key === key) {
        if (event.type === 'invoke') open.set(event.process, event);
        else open.delete(event.process);
      }
      continue;
    }
    if (event.process === 'nemesis') {
      const value = (event.value ?? {}) as Record<string, unknown>;
      const chains = (value.chains ?? {}) as Record<string, string>;
      console.log(
        `${event.time.toFixed(1).padStart(9)} MAP ${event.f} ${String(value.signature ?? JSON.stringify(value))} chain=${chains[key] ?? '?'}`,
      );
      continue;
    }
    if (event.key !== key) continue;
    if (event.type === 'invoke') {
      open.set(event.process, event);
      console.log(
        `${event.time.toFixed(1).padStart(9)} p${event.process} invoke ${event.f}${event.value === undefined ? '' : ` ${JSON.stringify(event.value)}`} #${event.index}`,
      );
    } else {
      const call = open.get(event.process);
      open.delete(event.process);
      console.log(
        `${event.time.toFixed(1).padStart(9)} p${event.process} ${event.type} ${event.f}${event.value === undefined ? '' : ` -> ${JSON.stringify(event.value)}`}${event.error === undefined ? '' : ` (${event.error})`} [invoked ${call?.time.toFixed(1) ?? '?'}]`,
      );
    }
  }
  for (const [process, call] of open)
    console.log(
      `  still open at window start: p${process} ${call.f} ${JSON.stringify(call.value)} @${call.time.toFixed(1)}`,
    );
}
