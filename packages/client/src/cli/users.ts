import { hashPassword } from '@dstore/protocol';
import type { Command } from 'commander';
import { DstoreError, ErrorCode } from '../errors.js';
import { printLine } from './shared.js';

/** Reads all of stdin as text (the password, so it never shows in `ps` or the shell history). */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Registers `hash-password`: prints the hash of a password (read from stdin, one line) for the
 * `password` field of a users file. The hash verifies a proof; it cannot be used to log in.
 */
export function registerHashPasswordCommand(program: Command): void {
  program
    .command('hash-password')
    .description('read a password from stdin and print its hash for a users file (--users)')
    .action(async () => {
      const password = (await readStdin()).replace(/\r?\n$/, '');
      if (password === '') throw new DstoreError(ErrorCode.INVALID_ARGUMENT, 'no password on stdin');
      printLine(await hashPassword(password));
    });
}
