/**
 * Fault injection on real processes: start a CLI (a storage node, a balancer), SIGKILL it, pause
 * it (SIGSTOP) and resume it (SIGCONT), restart it with the same arguments (the same data dir: an
 * lmdb node comes back with its data), and run a schedule of such faults. Every process is
 * tracked by a {@link Nemesis}, whose `cleanup()` (call it in afterAll/afterEach) leaves none
 * running, stopped or not.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { HistoryRecorder } from './recorder.js';

/** Options of a {@link ManagedProcess}. */
export interface ProcessOptions {
  /** For reports and the history's nemesis events. */
  readonly name: string;
  /** The script run by this Node.js (`node script ...args`). */
  readonly script: string;
  /** Its arguments; a function is called at every (re)start (e.g. to reuse a port). */
  readonly args: readonly string[] | (() => readonly string[]);
  /** How long to wait for the ready line. Default 15,000 ms. */
  readonly readyTimeoutMs?: number;
}

/** Most stderr kept per process (the tail), for failure messages. */
const STDERR_KEPT = 100_000;

/**
 * One CLI process whose first stdout line is a JSON ready document (as dstore-node and
 * dstore-balancer print), restartable.
 */
export class ManagedProcess<Ready> {
  private child: ChildProcess | undefined;
  private exit: Promise<void> = Promise.resolve();
  private stderrTail = '';
  private readyDocument: Ready | undefined;

  constructor(readonly options: ProcessOptions) {}

  get name(): string {
    return this.options.name;
  }

  /** The ready document of the current (or last) run. */
  get ready(): Ready {
    if (this.readyDocument === undefined) throw new Error(`${this.name} was never ready`);
    return this.readyDocument;
  }

  /** Whether a process of this is alive (running or paused). */
  get alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Its stderr so far (the last 100 kB). */
  stderr(): string {
    return this.stderrTail;
  }

  /** Starts it; resolves with its ready document. */
  start(): Promise<Ready> {
    if (this.alive) throw new Error(`${this.name} is already running`);
    const args = typeof this.options.args === 'function' ? this.options.args() : this.options.args;
    const child = spawn(process.execPath, [this.options.script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.exit = new Promise((done) => child.once('exit', () => done()));
    child.stderr!.on('data', (chunk: Buffer) => {
      this.stderrTail += chunk.toString();
      if (this.stderrTail.length > 2 * STDERR_KEPT) this.stderrTail = this.stderrTail.slice(-STDERR_KEPT);
    });
    return new Promise((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      const fail = (why: string) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} ${why}: ${this.stderrTail}`));
      };
      const timer = setTimeout(() => fail('not ready in time'), this.options.readyTimeoutMs ?? 15_000);
      child.once('exit', (code, signal) => fail(`exited (${code ?? signal}) before ready`));
      lines.once('line', (line) => {
        clearTimeout(timer);
        try {
          this.readyDocument = JSON.parse(line) as Ready;
          resolve(this.readyDocument);
        } catch (error) {
          reject(error);
        }
      });
    });
  }

  /** Sends `signal`; resolves once the process exited. A paused process is resumed first, so it can die. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.alive) return;
    if (signal !== 'SIGKILL') this.child!.kill('SIGCONT');
    this.child!.kill(signal);
    await this.exit;
  }

  /** SIGTERM: a graceful stop (a storage node leaves the cluster and hands its keys off). */
  terminate(): Promise<void> {
    return this.kill('SIGTERM');
  }

  /** SIGSTOP: the process stays, its sockets stay open, it answers nothing. */
  pause(): void {
    if (this.alive) this.child!.kill('SIGSTOP');
  }

  /** SIGCONT after {@link pause}. */
  resume(): void {
    if (this.alive) this.child!.kill('SIGCONT');
  }

  /** SIGKILL, then start again with the same options. */
  async restart(): Promise<Ready> {
    await this.kill('SIGKILL');
    return this.start();
  }
}

/** One fault of a schedule. */
export interface Fault {
  /** Wait this long (ms) after the previous fault (or the schedule's start). */
  readonly afterMs: number;
  /** Recorded in the history as the nemesis event's `f` (`kill`, `restart`, `join`...). */
  readonly f: string;
  /** Recorded as the event's value (which node). */
  readonly target: string;
  /** Injects it. */
  readonly run: () => unknown;
}

/** The processes of a test and the faults injected into them. */
export class Nemesis {
  /** Every process made here, whatever its ready document: all the cleanup needs is to kill it. */
  private readonly processes: Pick<ManagedProcess<unknown>, 'kill'>[] = [];

  constructor(private readonly recorder?: HistoryRecorder) {}

  /** A process tracked for cleanup (not started yet). */
  process<Ready>(options: ProcessOptions): ManagedProcess<Ready> {
    const managed = new ManagedProcess<Ready>(options);
    this.processes.push(managed);
    return managed;
  }

  /** Runs `faults` one after the other, recording each in the history when it starts and ends. */
  async run(faults: readonly Fault[]): Promise<void> {
    for (const fault of faults) {
      if (fault.afterMs > 0) await new Promise((resolve) => setTimeout(resolve, fault.afterMs));
      this.recorder?.nemesis(fault.f, fault.target);
      await fault.run();
      this.recorder?.nemesis(`${fault.f} done`, fault.target);
    }
  }

  /** SIGKILLs every tracked process still alive (paused ones included); safe to call twice. */
  async cleanup(): Promise<void> {
    await Promise.all(this.processes.map((managed) => managed.kill('SIGKILL').catch(() => undefined)));
  }
}
