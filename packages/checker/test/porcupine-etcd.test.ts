/**
 * The checker against porcupine's Jepsen etcd histories (fixtures/porcupine-etcd, MIT): same
 * verdicts as porcupine's own tests. A `fail`ed cas there means "the value was not `from`" (etcd
 * answered so), which porcupine's model checks; so does this test's builder (a cas that returned
 * false), where a dstore history would drop it.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  checkHistoryWith,
  type HistoryEvent,
  type JsonValue,
  type OperationBuilder,
  type RegisterInput,
  type RegisterOutput,
  registerModel,
  registerOperation,
} from '../src/index.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'porcupine-etcd');

/** porcupine_test.go's verdicts (true: linearizable). */
const verdicts: Record<string, boolean> = {
  '000': false,
  '001': false,
  '002': true,
  '003': false,
  '004': false,
  '005': true,
  '006': false,
  '007': true,
  '008': false,
  '009': false,
  '010': false,
  '018': true,
  '025': true,
  '031': true,
  '038': true,
  '045': true,
  '048': true,
  '049': true,
  '051': true,
  '053': true,
  '056': true,
  '067': true,
  '100': true,
  '102': true,
};

const LINE = /^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(invoke|ok|fail|info)\s+:(read|write|cas)\s+(.*)$/;

/** Jepsen's log lines as history events (other lines are skipped). */
function parseJepsenLog(text: string): HistoryEvent[] {
  const events: HistoryEvent[] = [];
  for (const line of text.split('\n')) {
    const match = LINE.exec(line.trim());
    if (match === null) continue;
    const [, process, type, f, rest] = match as unknown as [
      string,
      string,
      HistoryEvent['type'],
      string,
      string,
    ];
    let value: JsonValue | undefined;
    if (f === 'cas' && type === 'invoke') value = rest.replace(/[[\]]/g, '').split(/\s+/);
    else if (f === 'write' && type === 'invoke') value = rest;
    else if (f === 'read' && type === 'ok') value = rest === 'nil' ? null : rest;
    events.push({
      index: events.length,
      type,
      process: Number(process),
      f,
      key: 'r',
      time: events.length,
      value,
    });
  }
  return events;
}

/** dstore's register builder, plus etcd's answered cas mismatch (`fail`) as a cas that returned false. */
const etcdOperation: OperationBuilder<RegisterInput, RegisterOutput> = (pair) => {
  if (pair.invoke.f !== 'cas' || pair.completion?.type !== 'fail') return registerOperation(pair);
  const asOk = registerOperation({ ...pair, completion: { ...pair.completion, type: 'ok' } })!;
  return { ...asOk, output: false };
};

describe('porcupine etcd histories', () => {
  it.each(Object.entries(verdicts))('etcd_%s.log: same verdict as porcupine', (number, linearizable) => {
    const events = parseJepsenLog(readFileSync(join(fixtures, `etcd_${number}.log`), 'utf8'));
    expect(events.length).toBeGreaterThan(100);
    const result = checkHistoryWith(events, registerModel, etcdOperation, { timeLimitMs: 10_000 });
    expect(result.verdict).toBe(linearizable ? 'ok' : 'illegal');
    if (!linearizable) expect(result.illegal[0]!.explanation).toContain('None of these can come next');
  });
});
