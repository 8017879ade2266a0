import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readTlsFiles } from '@dstore/protocol';
import { EnvVar, parseAddress } from '@dstore/protocol/internal';
import { DstoreError, ErrorCode } from '../errors.js';

/** The flags of the commands that talk to the balancer's admin HTTP port. */
export interface AdminOptions {
  readonly admin: string;
  /** Bearer token (else env DSTORE_ADMIN_TOKEN). */
  readonly adminToken?: string;
  /** PEM CA the admin HTTPS server is verified against; implies HTTPS. */
  readonly tlsCa?: string;
}

/** Where and how to reach the admin API: one object per command run. */
export interface AdminEndpoint {
  /** `http(s)://host:port`. */
  readonly base: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly ca: Buffer | undefined;
}

/** Flags of the admin commands: `--admin-token` and `--tls-ca`. */
export const ADMIN_FLAGS = {
  token: ['--admin-token <token>', `Bearer token of the balancer admin API (env ${EnvVar.ADMIN_TOKEN})`],
  tlsCa: ['--tls-ca <file>', 'the admin port serves HTTPS: verify it against this PEM CA'],
} as const;

/** The endpoint of `--admin` (an `https://` prefix or `--tls-ca` means HTTPS). */
export async function adminEndpoint(options: AdminOptions): Promise<AdminEndpoint> {
  const { host, port } = parseAddress(options.admin, {
    defaultPort: 7380,
    defaultHost: '127.0.0.1',
    what: '--admin',
  });
  const tls = await readTlsFiles({ ca: options.tlsCa });
  const secure = tls !== undefined || /^https:\/\//i.test(options.admin.trim());
  const token = options.adminToken ?? process.env[EnvVar.ADMIN_TOKEN];
  return {
    base: `${secure ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`,
    headers: token === undefined || token === '' ? {} : { authorization: `Bearer ${token}` },
    ca: tls?.ca,
  };
}

/** The answer of an admin request: its status and its body parsed as JSON. */
export interface AdminAnswer<T> {
  readonly status: number;
  readonly body: T;
}

/**
 * One admin HTTP(S) request with a deadline. UNAVAILABLE when the balancer cannot be reached
 * (TLS failures included), TIMEOUT past `timeoutMs`, UNAUTHORIZED on 401/403 (the admin token),
 * MALFORMED_FRAME when the answer is not JSON.
 */
export function adminRequest<T>(
  endpoint: AdminEndpoint,
  path: string,
  options: { readonly method?: string; readonly timeoutMs: number },
): Promise<AdminAnswer<T>> {
  const url = `${endpoint.base}${path}`;
  const send = endpoint.base.startsWith('https') ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const request = send(
      url,
      {
        method: options.method ?? 'GET',
        headers: endpoint.headers,
        ...(endpoint.ca ? { ca: endpoint.ca } : {}),
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          const status = response.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch (error) {
            reject(
              new DstoreError(ErrorCode.MALFORMED_FRAME, `${url} did not answer JSON`, { cause: error }),
            );
            return;
          }
          if (status === 401 || status === 403) {
            const detail = (body as { error?: string }).error ?? `HTTP ${status}`;
            reject(new DstoreError(ErrorCode.UNAUTHORIZED, `${url}: ${detail} (--admin-token)`));
            return;
          }
          resolve({ status, body: body as T });
        });
        response.on('error', (error) => reject(unreachable(url, error)));
      },
    );
    request.setTimeout(options.timeoutMs, () =>
      request.destroy(
        new DstoreError(ErrorCode.TIMEOUT, `cannot fetch ${url}: no answer within ${options.timeoutMs} ms`),
      ),
    );
    request.on('error', (error) => reject(error instanceof DstoreError ? error : unreachable(url, error)));
    request.end();
  });
}

function unreachable(url: string, error: Error): DstoreError {
  return new DstoreError(ErrorCode.UNAVAILABLE, `cannot fetch ${url}: ${error.message}`, { cause: error });
}
