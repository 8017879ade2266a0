/**
 * RespConnection over a real socket with a runner that answers late and out of order: answers
 * leave in command order, and reading stops at the in-flight bound until answers drain.
 */
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type RespCommandRunner, RespConnection } from '../src/resp/connection.js';
import { keySlotsOfArgs, type OrderedCommand } from '../src/resp/key-order.js';
import { Resources, waitFor } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

/** Commands received and not answered yet, by sequence number. */
class LateRunner implements RespCommandRunner {
  readonly waiting: { connection: RespConnection; seq: number; text: string }[] = [];

  run(connection: RespConnection, args: Uint8Array[], seq: number): void {
    this.waiting.push({ connection, seq, text: Buffer.from(args[1] ?? args[0]!).toString() });
  }

  /** Without keys: nothing waits (the order tests give their own runner). */
  orderOf(_connection: RespConnection, _args: Uint8Array[]): OrderedCommand | undefined {
    return undefined;
  }

  /** Answers every waiting command, last first, each with its own argument. */
  answerInReverse(): void {
    for (const { connection, seq, text } of this.waiting.splice(0).reverse()) {
      connection.beginReply(seq).bulkText(text);
      connection.endReply(seq);
    }
  }
}

/** A listening socket whose first connection becomes a RespConnection; the client socket. */
async function connectionPair(runner: RespCommandRunner, maxInFlight: number): Promise<Socket> {
  // Half-open, as the RESP server: a client that shut its side still gets its answers.
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    const connection = new RespConnection(socket, 1, runner, {
      parser: { maxArgBytes: 1024, maxCommandBytes: 4096, maxArgs: 8 },
      maxInFlight,
      maxOutputBytes: 1024 * 1024,
    });
    resources.add(() => connection.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  resources.add(() => new Promise((resolve) => server.close(resolve)));
  const address = server.address();
  const client = netConnect({
    host: '127.0.0.1',
    port: typeof address === 'object' && address ? address.port : 0,
  });
  client.on('error', () => undefined);
  resources.add(() => client.destroy());
  await new Promise((resolve) => client.once('connect', resolve));
  return client;
}

describe('RespConnection', () => {
  it('writes answers in command order when they complete in reverse', async () => {
    const runner = new LateRunner();
    const client = await connectionPair(runner, 64);
    let reply = '';
    client.on('data', (chunk: Buffer) => {
      reply += chunk.toString();
    });
    client.write('ECHO a\r\nECHO b\r\nECHO c\r\n');
    await waitFor(() => runner.waiting.length === 3, 'three commands');
    runner.answerInReverse();
    await waitFor(() => reply.length >= 21, 'three answers');
    expect(reply).toBe('$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n');
  });

  it('stops reading at the in-flight bound and resumes when answers drain', async () => {
    const runner = new LateRunner();
    const client = await connectionPair(runner, 4);
    let answers = 0;
    client.on('data', (chunk: Buffer) => {
      answers += chunk
        .toString()
        .split('\r\n')
        .filter((line) => line.startsWith('$')).length;
    });
    // Ten commands in separate writes: the connection takes the first four, then waits.
    for (let index = 0; index < 10; index++) client.write(`ECHO ${index}\r\n`);
    await waitFor(() => runner.waiting.length === 4, 'four in flight');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(runner.waiting.length).toBeLessThanOrEqual(4);
    while (answers < 10) {
      runner.answerInReverse();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(answers).toBe(10);
  });

  it('answers every command of a client that shut its side, also those past the in-flight bound', async () => {
    const runner = new LateRunner();
    const client = await connectionPair(runner, 4);
    let answers = 0;
    let ended = false;
    client.on('data', (chunk: Buffer) => {
      answers += chunk
        .toString()
        .split('\r\n')
        .filter((line) => line.startsWith('$')).length;
    });
    client.on('end', () => {
      ended = true;
    });
    client.end('ECHO 0\r\nECHO 1\r\nECHO 2\r\nECHO 3\r\nECHO 4\r\nECHO 5\r\nECHO 6\r\nECHO 7\r\n');
    await waitFor(() => runner.waiting.length === 4, 'four in flight');
    while (!ended) {
      runner.answerInReverse();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(answers).toBe(8);
  });

  it('answers the commands before a protocol error, then the error, then closes', async () => {
    const runner = new LateRunner();
    const client = await connectionPair(runner, 1);
    let reply = '';
    let closed = false;
    client.on('data', (chunk: Buffer) => {
      reply += chunk.toString();
    });
    client.on('close', () => {
      closed = true;
    });
    client.write('ECHO a\r\nECHO b\r\n*1\r\n$x\r\n');
    while (!closed) {
      runner.answerInReverse();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(reply).toBe('$1\r\na\r\n$1\r\nb\r\n-ERR Protocol error: invalid bulk length\r\n');
  });

  it("holds a command while commands of its key of the other kind are in flight (a key's reads and writes on two nodes)", async () => {
    // SET writes, GET reads, both name their argument 1; SCAN names none (a barrier).
    class OrderedRunner extends LateRunner {
      override orderOf(_connection: RespConnection, args: Uint8Array[]): OrderedCommand | undefined {
        const name = Buffer.from(args[0]!).toString().toLowerCase();
        if (name === 'scan') return { slots: undefined, write: false, barrier: true };
        return { slots: keySlotsOfArgs(args, [1, 1, 1]), write: name === 'set' };
      }

      names(): string[] {
        return this.waiting.map(({ text }) => text);
      }

      answerFirst(): void {
        const { connection, seq, text } = this.waiting.shift()!;
        connection.beginReply(seq).bulkText(text);
        connection.endReply(seq);
      }
    }
    const runner = new OrderedRunner();
    const client = await connectionPair(runner, 64);
    let reply = '';
    client.on('data', (chunk: Buffer) => {
      reply += chunk.toString();
    });
    // GETs of k wait for the SET of k; the SET of j and the GETs of other keys do not.
    client.write('SET k\r\nGET other\r\nGET k\r\nGET k\r\nSET j\r\n');
    await waitFor(() => runner.waiting.length === 2, 'the SET and the GET of another key');
    expect(runner.names()).toEqual(['k', 'other']);
    runner.answerFirst();
    // Both GETs of k go together (one kind), then the SET of j (another key) with them.
    await waitFor(() => runner.waiting.length === 4, 'the GETs of k and the SET of j');
    expect(runner.names()).toEqual(['other', 'k', 'k', 'j']);
    // A SET of k waits for both GETs; a barrier waits for everything, and GET j for the barrier.
    client.write('SET k\r\nSCAN 0\r\nGET j\r\n');
    while (runner.waiting.length > 0) runner.answerFirst();
    await waitFor(() => runner.waiting.length === 1, 'the second SET of k');
    expect(runner.names()).toEqual(['k']);
    runner.answerFirst();
    await waitFor(() => runner.waiting.length === 1, 'the barrier');
    expect(runner.names()).toEqual(['0']);
    runner.answerFirst();
    await waitFor(() => runner.waiting.length === 1, 'the GET after the barrier');
    expect(runner.names()).toEqual(['j']);
    runner.answerFirst();
    await waitFor(() => reply.split('\r\n').length > 16, 'eight answers');
    expect(reply).toBe(
      ['k', 'other', 'k', 'k', 'j', 'k', '0', 'j'].map((text) => `$${text.length}\r\n${text}\r\n`).join(''),
    );
  });

  it('counts the answers held behind a slow one against the output bound: reading stops past half of it', async () => {
    // The first command stays unanswered; every later one is answered at once with 100 KB, held
    // aside until the first is answered (the connection's output bound is 1 MiB).
    const big = 'x'.repeat(100_000);
    class HeadHeldRunner extends LateRunner {
      ran = 0;
      override run(connection: RespConnection, args: Uint8Array[], seq: number): void {
        this.ran++;
        if (this.ran === 1) {
          super.run(connection, args, seq);
          return;
        }
        connection.beginReply(seq).bulkText(big);
        connection.endReply(seq);
      }
    }
    const runner = new HeadHeldRunner();
    const client = await connectionPair(runner, 1024);
    let received = 0;
    client.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    client.write('ECHO a\r\n'.repeat(40));
    await waitFor(() => runner.ran >= 2, 'the commands after the first');
    // Half the bound (512 KiB) stops the reading: the answers held (three of 100 KB) and the four
    // commands in flight at the recent answer size (100 KB each) reach it; not 39 commands run.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(runner.ran).toBe(4);
    // The first answered: it and the three held go out (the others then run).
    runner.answerInReverse();
    const expected = '$1\r\na\r\n'.length + 3 * `$${big.length}\r\n${big}\r\n`.length;
    await waitFor(() => received >= expected, 'the first answer and the three held');
    expect(runner.ran).toBeGreaterThan(7);
  });
});
