/**
 * Small files that must survive a crash whole: written to a temporary file beside the target,
 * fsync'ed, renamed over the target, and the directory fsync'ed. A crash leaves the old content or
 * the new one, never a mix, and never loses the rename (the storage node's identity and cluster
 * binding, the balancer's file cluster map).
 *
 * @packageDocumentation
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Replaces `path` with `content` durably (see the module). The directory is created when missing.
 * The temporary name is unique, so two processes wrongly started on one directory never write one
 * temporary file; it is removed when the write fails. Throws the file system's error.
 */
export async function writeFileDurably(path: string, content: string): Promise<void> {
  const dir = dirname(path);
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await mkdir(dir, { recursive: true });
    const file = await open(temporary, 'wx', 0o644);
    try {
      await file.writeFile(content, 'utf8');
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true }).catch(() => undefined);
    throw error;
  }
  // The rename is durable only once the directory entry is: without this, a power loss could
  // bring back the old file (or none) after the caller went on as if the new one were there.
  await fsyncDirectory(dir);
}

async function fsyncDirectory(dir: string): Promise<void> {
  // Windows cannot open a directory for fsync; NTFS journals the rename itself.
  if (process.platform === 'win32') return;
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
