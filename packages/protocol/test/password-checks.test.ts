/**
 * PasswordChecks: passwords sent in clear checked against stored credentials with a bounded number
 * of scrypts at once, waiting checks in turns by address, the same ask shared, a right password
 * remembered. Real scrypt derivations (a cheap cost, so that the test is quick).
 */
import { describe, expect, it } from 'vitest';
import { decoyCredential, parsePasswordHash, type StoredCredential } from '../src/auth.js';
import { DstoreError, ErrorCode, hashPassword } from '../src/index.js';
import { PasswordChecks } from '../src/password-checks.js';

const CHEAP = { N: 1024, r: 8, p: 1 };

async function credentialOf(password: string): Promise<StoredCredential> {
  return parsePasswordHash(await hashPassword(password, CHEAP));
}

describe('PasswordChecks', () => {
  it('answers whether the password is the credential’s, and false for a decoy', async () => {
    const checks = new PasswordChecks();
    const credential = await credentialOf('right');
    expect(await checks.verify(credential, 'right', '127.0.0.1')).toBe(true);
    expect(await checks.verify(credential, 'wrong', '127.0.0.1')).toBe(false);
    expect(await checks.verify(decoyCredential('ghost', new Uint8Array(32)), 'right', '127.0.0.1')).toBe(
      false,
    );
    expect(checks.derivations).toBe(3);
  });

  it('runs at most `atOnce` derivations at once, whatever arrives together', async () => {
    const checks = new PasswordChecks({ atOnce: 2 });
    const credential = await credentialOf('right');
    const answers = await Promise.all(
      Array.from({ length: 24 }, (_, index) =>
        checks.verify(credential, `guess-${index}`, `10.0.0.${index % 3}`),
      ),
    );
    expect(answers.every((verified) => !verified)).toBe(true);
    expect(checks.derivations).toBe(24);
    expect(checks.peakRunning).toBe(2);
    expect(checks.waiting).toBe(0);
  });

  it('gives each waiting address a turn: a check from a new address is not queued behind a flood', async () => {
    const checks = new PasswordChecks({ atOnce: 1 });
    const credential = await credentialOf('right');
    const order: string[] = [];
    const flood = Array.from({ length: 12 }, (_, index) =>
      checks.verify(credential, `guess-${index}`, '10.0.0.66').then(() => order.push(`flood-${index}`)),
    );
    // Twelve checks of one address: one runs, eleven wait. Another address's check comes now.
    expect(checks.waiting).toBe(11);
    const good = checks.verify(credential, 'right', '::ffff:10.0.0.7').then((verified) => {
      order.push('good');
      return verified;
    });
    expect(await good).toBe(true);
    await Promise.all(flood);
    // The running check, then one turn of the flooding address, then the other address's.
    expect(order.indexOf('good')).toBe(2);
    expect(order).toHaveLength(13);
  });

  it('shares one derivation between the checks asking the same, and remembers a right password', async () => {
    const checks = new PasswordChecks({ atOnce: 1 });
    const credential = await credentialOf('right');
    // A pool of clients reconnecting together: one derivation for all of them.
    const together = await Promise.all(
      Array.from({ length: 10 }, (_, index) => checks.verify(credential, 'right', `10.0.1.${index}`)),
    );
    expect(together.every((verified) => verified)).toBe(true);
    expect(checks.derivations).toBe(1);
    // Later connections with the right password: answered from memory, no derivation.
    for (let index = 0; index < 5; index++)
      expect(await checks.verify(credential, 'right', '10.0.1.1')).toBe(true);
    expect(checks.derivations).toBe(1);
    expect(checks.remembered).toBe(5);
    // A wrong password is never answered from memory, and the same wrong guess sent at once is checked once.
    const wrong = await Promise.all([1, 2, 3].map(() => checks.verify(credential, 'wrong', '10.0.0.66')));
    expect(wrong).toEqual([false, false, false]);
    expect(checks.derivations).toBe(2);
    // Another credential (a users-file reload makes new ones) remembers nothing of the first.
    const reloaded = await credentialOf('right');
    expect(await checks.verify(reloaded, 'right', '10.0.1.1')).toBe(true);
    expect(checks.derivations).toBe(3);
  });

  it('refuses with BUSY, at once, a check past `maxWaiting` waiting ones, and serves the rest', async () => {
    const checks = new PasswordChecks({ atOnce: 1, maxWaiting: 3 });
    const credential = await credentialOf('right');
    const accepted = [0, 1, 2, 3].map((index) => checks.verify(credential, `guess-${index}`, '10.0.0.66'));
    expect(checks.waiting).toBe(3);
    const refused = await checks.verify(credential, 'guess-4', '10.0.0.67').catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(DstoreError);
    expect((refused as DstoreError).code).toBe(ErrorCode.BUSY);
    expect(checks.refused).toBe(1);
    expect(await Promise.all(accepted)).toEqual([false, false, false, false]);
    // Once they are done, checks are taken again.
    expect(await checks.verify(credential, 'right', '10.0.0.67')).toBe(true);
  });
});
