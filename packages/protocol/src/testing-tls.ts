import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Paths of one certificate and its key, and their PEM contents. */
export interface TestCertificate {
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** A throwaway PKI for tests: a CA, certificates it signed, and one signed by another CA. */
export interface TestPki {
  readonly dir: string;
  /** The cluster's CA (give it as `--tls-ca`). */
  readonly ca: TestCertificate;
  /** Signed by `ca`, for `127.0.0.1` and `localhost`: serves and dials as any peer. */
  readonly peer: TestCertificate;
  /** Signed by another CA (`rogueCa`), same names: a peer that must not be trusted. */
  readonly rogue: TestCertificate;
  /** The other CA: what a client with the wrong CA trusts. */
  readonly rogueCa: TestCertificate;
}

function openssl(args: readonly string[]): void {
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(
      `openssl ${args[0]} failed (install it: scripts/install-test-deps.sh): ${(error as Error).message} ${stderr}`,
    );
  }
}

function load(dir: string, name: string): TestCertificate {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}.key`);
  return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
}

function createCa(dir: string, name: string): TestCertificate {
  openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    join(dir, `${name}.key`),
    '-out',
    join(dir, `${name}.pem`),
    '-days',
    '2',
    '-subj',
    `/CN=dstore test ${name}`,
  ]);
  return load(dir, name);
}

function createSigned(dir: string, name: string, ca: TestCertificate): TestCertificate {
  const csr = join(dir, `${name}.csr`);
  const extensions = join(dir, `${name}.ext`);
  // Server and client use: the same certificate serves a peer's port and dials other peers.
  writeFileSync(
    extensions,
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n',
  );
  openssl([
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    join(dir, `${name}.key`),
    '-out',
    csr,
    '-subj',
    `/CN=dstore test ${name}`,
  ]);
  openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.certFile,
    '-CAkey',
    ca.keyFile,
    '-CAcreateserial',
    '-out',
    join(dir, `${name}.pem`),
    '-days',
    '2',
    '-extfile',
    extensions,
  ]);
  return load(dir, name);
}

/**
 * Generates a throwaway PKI in `dir` with the `openssl` CLI (P-256 keys, valid 2 days): a CA, a
 * peer certificate it signed, and a rogue certificate signed by another CA. Takes well under a
 * second; the files are left for the caller to delete with `dir`.
 */
export function createTestPki(dir: string): TestPki {
  mkdirSync(dir, { recursive: true });
  const ca = createCa(dir, 'ca');
  const rogueCa = createCa(dir, 'rogue-ca');
  return {
    dir,
    ca,
    peer: createSigned(dir, 'peer', ca),
    rogue: createSigned(dir, 'rogue', rogueCa),
    rogueCa,
  };
}
