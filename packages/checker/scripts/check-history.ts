/**
 * Checks a history file (JSONL, see README.md) and prints the verdict with its explanation.
 *
 *   pnpm --filter @dstore/checker check-history <history.jsonl> [time limit in ms]
 *
 * Exit code: 0 linearizable, 1 not linearizable, 2 undecided within the time limit.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { checkHistory, formatCheckResult, parseHistory } from '../src/index.js';

const [file, limit] = process.argv.slice(2);
if (file === undefined) {
  console.error('usage: check-history <history.jsonl> [time limit in ms]');
  process.exit(64);
}
// pnpm --filter runs in the package's folder: a relative path is the caller's.
const path = resolve(process.env.INIT_CWD ?? process.cwd(), file);
const result = checkHistory(parseHistory(readFileSync(path, 'utf8')), {
  timeLimitMs: limit === undefined ? undefined : Number(limit),
});
console.log(formatCheckResult(result));
process.exit(result.verdict === 'ok' ? 0 : result.verdict === 'illegal' ? 1 : 2);
