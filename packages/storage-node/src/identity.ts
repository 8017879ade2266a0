/**
 * A node's identity (its incarnation, as the balancer's cluster map knows it) is a random
 * 128-bit value written as 32 lowercase hex digits. The node id names a place in the ring and is
 * chosen by the operator; the identity tells which incarnation of a node (which data) answers under
 * that id. A node with a new identity is a new member to the balancer, even under an old id.
 *
 * - lmdb: created on the first start and kept in {@link IDENTITY_FILE_NAME} in the data dir, next
 *   to the LMDB files, so it lives exactly as long as the data does.
 * - memory: new at every start, never stored. A restarted memory node has lost its data, and the
 *   cluster map must know that it is not the member it was.
 *
 * @packageDocumentation
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DstoreError, ErrorCode } from '@dstore/protocol';
import { writeFileDurably } from '@dstore/protocol/internal';

/** Name of the identity file inside an lmdb node's data dir. */
export const IDENTITY_FILE_NAME = 'node-identity';

const IDENTITY_BYTES = 16;
const IDENTITY_PATTERN = /^[0-9a-f]{32}$/;

/** A new random identity: 128 bits from the OS CSPRNG, as 32 lowercase hex digits. */
export function newNodeIdentity(): string {
  return randomBytes(IDENTITY_BYTES).toString('hex');
}

/** Whether `text` is a well-formed identity (32 lowercase hex digits). */
export function isNodeIdentity(text: string): boolean {
  return IDENTITY_PATTERN.test(text);
}

/**
 * The identity kept in `dataDir`: read from its {@link IDENTITY_FILE_NAME} file, or created
 * there when the file is missing (the first start on this data dir; `dataDir` is created if
 * needed). Creation is atomic (`writeFileDurably`), so a crash never leaves a partial file that a
 * later start would have to guess about.
 *
 * Throws DstoreError INTERNAL when the file exists but does not hold a valid identity, or cannot
 * be read or written. A bad file is never replaced: a new identity would make this node a new
 * member and hand its data to someone else's place in the cluster map.
 */
export async function loadOrCreateNodeIdentity(dataDir: string): Promise<string> {
  const path = join(dataDir, IDENTITY_FILE_NAME);
  const stored = await readIdentityFile(path);
  if (stored !== undefined) return stored;
  const identity = newNodeIdentity();
  await writeIdentityFile(path, identity);
  return identity;
}

/** The identity in `path`; undefined when there is no such file; throws when it is not valid. */
async function readIdentityFile(path: string): Promise<string | undefined> {
  let content: string;
  try {
    content = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw identityError(`cannot read the node identity file ${path}: ${(error as Error).message}`, error);
  }
  // One trailing newline is what we write (and what an editor adds); anything else is damage.
  const identity = content.endsWith('\n') ? content.slice(0, -1) : content;
  if (!isNodeIdentity(identity)) {
    throw identityError(
      `the node identity file ${path} does not hold a valid identity (expected 32 lowercase hex ` +
        `digits, found ${describeContent(content)}). Restore it from a backup of this data dir; ` +
        'delete it only to make this node join the cluster as a new member (its data then counts ' +
        'for nothing in the cluster map)',
    );
  }
  return identity;
}

async function writeIdentityFile(path: string, identity: string): Promise<void> {
  try {
    await writeFileDurably(path, `${identity}\n`);
  } catch (error) {
    throw identityError(`cannot create the node identity file ${path}: ${(error as Error).message}`, error);
  }
}

/** A short, printable description of a bad identity file's content, for the error message. */
function describeContent(content: string): string {
  if (content.length === 0) return 'an empty file';
  const shown = JSON.stringify(content.length > 40 ? `${content.slice(0, 40)}…` : content);
  return `${content.length} characters: ${shown}`;
}

function identityError(message: string, cause?: unknown): DstoreError {
  return new DstoreError(ErrorCode.INTERNAL, message, cause === undefined ? undefined : { cause });
}
