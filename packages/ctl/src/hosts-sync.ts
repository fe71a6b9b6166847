import fs from 'node:fs';
import path from 'node:path';
import { MAX_SOURCE_BYTES, mergeHostsBlock, parsePeerHosts } from './hosts-merge';

export const PEER_HOSTS_FILE = '/run/mnedc/hosts';
export const SYSTEM_HOSTS_FILE = '/etc/hosts';
/**
 * /etc/hosts as one byte a character: the administrator's lines may be in any encoding (a Latin-1 comment),
 * and UTF-8 would turn what it cannot decode into U+FFFD on the way back. Our block is ASCII.
 */
const TARGET_ENCODING = 'latin1';

export interface SyncResult {
  entries: number;
  skipped: number;
  badNames: number;
  changed: boolean;
}

/**
 * The client's hosts file, read as root from a directory its unprivileged writer owns: never through a
 * symbolic link, never a FIFO or device (O_NONBLOCK, then a regular file is required), never more than
 * the bound. Absent means no peers.
 */
function readSource(file: string): string {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return '';
    if (code === 'ELOOP') throw new Error(`${file} is a symbolic link: not read`);
    throw err;
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw new Error(`${file} is not a regular file: not read`);
    const buffer = Buffer.alloc(MAX_SOURCE_BYTES + 1);
    let length = 0;
    for (let n = -1; n !== 0 && length < buffer.length;) {
      n = fs.readSync(fd, buffer, length, buffer.length - length, null);
      length += n;
    }
    if (length > MAX_SOURCE_BYTES) throw new Error(`${file} is larger than ${MAX_SOURCE_BYTES} bytes: not read`);
    return buffer.toString('utf8', 0, length);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The target's text, null when there is none. A symbolic link is refused before anything is done: the
 * rename (or the removal of an emptied file) would replace the link itself, and writing through it would
 * have root write wherever the link points.
 */
function readTarget(file: string): string | null {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  if (stat.isSymbolicLink()) {
    throw new Error(`${file} is a symbolic link to ${fs.readlinkSync(file)}: not changed (merge into the file it points to by hand, or make ${file} a regular file)`);
  }
  return fs.readFileSync(file, TARGET_ENCODING);
}

/**
 * Replaces the target in one rename, keeping its mode and owner, so a resolver never reads half a file. A
 * target that is a mount point (a container runtime's bind-mounted /etc/hosts) cannot be renamed over:
 * it is rewritten in place.
 */
function writeTarget(file: string, text: string): void {
  let stat: fs.Stats | null = null;
  try {
    stat = fs.lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.mnedc-${process.pid}`);
  try {
    const fd = fs.openSync(temporary, 'wx', stat ? stat.mode & 0o7777 : 0o644);
    try {
      fs.writeFileSync(fd, text, TARGET_ENCODING);
      if (stat) fs.fchownSync(fd, stat.uid, stat.gid);
      fs.fchmodSync(fd, stat ? stat.mode & 0o7777 : 0o644);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    try {
      fs.renameSync(temporary, file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EBUSY' && code !== 'EXDEV') throw err;
      fs.writeFileSync(file, text, TARGET_ENCODING);
    }
  } finally {
    fs.rmSync(temporary, { force: true });
  }
}

/**
 * One merge of `source` into `target` (empty when `remove`). The client may rewrite its file while this
 * runs: the source is read again after the write, and merged again (a few times at most) until it holds
 * still. A change after the last read is this call's caller's to catch (sync-hosts --watch merges again).
 */
export function syncHosts(options: { source?: string; target?: string; remove?: boolean } = {}): SyncResult {
  const source = options.source ?? PEER_HOSTS_FILE;
  const target = options.target ?? SYSTEM_HOSTS_FILE;
  let result: SyncResult = { entries: 0, skipped: 0, badNames: 0, changed: false };
  let text = options.remove ? '' : readSource(source);
  for (let round = 0; round < 5; round++) {
    const { lines, skipped, badNames } = parsePeerHosts(text);
    const current = readTarget(target);
    const next = mergeHostsBlock(current, lines);
    const changed = next !== (current ?? '');
    // Nothing but our block was there (minimal systems have no /etc/hosts): leave no empty file behind.
    if (changed && next === '') fs.rmSync(target, { force: true });
    else if (changed) writeTarget(target, next);
    result = { entries: lines.length, skipped, badNames, changed: result.changed || changed };
    if (options.remove) break;
    const again = readSource(source);
    if (again === text) break;
    text = again;
  }
  return result;
}
