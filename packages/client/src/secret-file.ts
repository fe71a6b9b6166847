import { readFileSync, statSync } from 'node:fs';

/**
 * The configuration file holds the join secret: whoever reads it can join the network. The packages
 * install it 0640 root:mnedc; an operator's copy, an old install or a hand-made file may be laxer, and the
 * daemon cannot tell from the parsed settings. This decides, from the file's stat fields, who besides the
 * daemon can read it and what would fix that, so the daemon can say so at start.
 */

export interface FileOwnership {
  /** st_mode: permission bits in the low 12 bits (file type bits are ignored). */
  mode: number;
  uid: number;
  gid: number;
}

export interface SecretFileReader {
  /** The daemon's own user and group (process.getuid / getgid). */
  uid: number;
  gid: number;
  /**
   * Groups whose members may read the secret besides the daemon's own: the packaged daemon's group when
   * the daemon runs as root from a source tree, so the installed 0640 root:mnedc file does not warn.
   */
  trustedGids?: readonly number[];
}

/** uid → user name and gid → group name; a missing entry is shown as its number. */
export interface IdNames {
  users: ReadonlyMap<number, string>;
  groups: ReadonlyMap<number, string>;
}

export interface SecretFileExposure {
  /** One warn-level line: the file, who can read it, its mode and owner/group, and the fix. */
  message: string;
  mode: string;
  owner: string;
  group: string;
  /** Shell commands that leave the file readable by the daemon and nobody else it does not trust. */
  fix: string;
}

const NO_NAMES: IdNames = { users: new Map(), groups: new Map() };

function octal(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;
}

/** A path as one shell word, so the fix can be pasted as it is. */
function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

/** A name for a shell command and a log line: an unknown ID stays a number, which chown accepts too. */
function nameOf(names: ReadonlyMap<number, string>, id: number): string {
  return names.get(id) ?? String(id);
}

/**
 * Who can read the secret file although they need not, or null when nobody can. Root and the daemon's
 * user may read it; so may the daemon's group and `trustedGids`. Everyone else — every user through the
 * "other" bits, another group, another owner — is exposure. The fix keeps the daemon able to read the file:
 * as its owner (root, or the daemon's own user) it needs no group, otherwise the group is its own.
 */
export function secretFileExposure(path: string, file: FileOwnership, daemon: SecretFileReader, names: IdNames = NO_NAMES): SecretFileExposure | null {
  const mode = file.mode & 0o7777;
  const trustedGroup = (gid: number) => gid === daemon.gid || (daemon.trustedGids ?? []).includes(gid);
  const trustedOwner = file.uid === 0 || file.uid === daemon.uid;
  const readers: string[] = [];
  if (mode & 0o004) readers.push('every user');
  if (mode & 0o040 && !trustedGroup(file.gid)) readers.push(`group ${nameOf(names.groups, file.gid)}`);
  if (mode & 0o400 && !trustedOwner) readers.push(`user ${nameOf(names.users, file.uid)}`);
  if (readers.length === 0) return null;

  const owner = trustedOwner ? file.uid : 0;
  const readsAsOwner = daemon.uid === 0 || daemon.uid === owner;
  let gid = file.gid;
  let wanted = mode & ~0o007;
  if (readsAsOwner) {
    wanted |= 0o400;
    if (!trustedGroup(gid)) wanted &= ~0o070;
  } else {
    gid = daemon.gid;
    wanted = (wanted | 0o040) & ~0o020;
  }
  const steps: string[] = [];
  const target = shellWord(path);
  if (owner !== file.uid) steps.push(`chown ${nameOf(names.users, owner)}${gid !== file.gid ? `:${nameOf(names.groups, gid)}` : ''} ${target}`);
  else if (gid !== file.gid) steps.push(`chgrp ${nameOf(names.groups, gid)} ${target}`);
  if (wanted !== mode) steps.push(`chmod ${octal(wanted)} ${target}`);
  const fix = steps.join(' && ');
  const ownerName = nameOf(names.users, file.uid);
  const groupName = nameOf(names.groups, file.gid);
  const who = readers.length === 1 ? readers[0]! : `${readers.slice(0, -1).join(', ')} and ${readers[readers.length - 1]!}`;
  return {
    message: `${path} holds the join secret but ${who} can read it (mode ${octal(mode)}, owner ${ownerName}, group ${groupName}); ` +
      `anyone holding the secret can join the network. Fix: ${fix}`,
    mode: octal(mode),
    owner: ownerName,
    group: groupName,
    fix,
  };
}

/** ID → name from passwd(5) or group(5) text (name:password:ID:...); unparsable lines are skipped. */
export function parseIdFile(text: string): Map<number, string> {
  const names = new Map<number, string>();
  for (const line of text.split('\n')) {
    const [name, , id] = line.split(':');
    if (!name || id === undefined || !/^\d+$/.test(id)) continue;
    const n = Number(id);
    if (!names.has(n)) names.set(n, name);
  }
  return names;
}

function readIdFile(path: string): Map<number, string> {
  try {
    return parseIdFile(readFileSync(path, 'utf8'));
  } catch {
    // Only the message's names depend on it; numbers say the same.
    return new Map();
  }
}

/** The group the Debian packages run the daemons as (debian/mnedcctl.sysusers). */
const PACKAGE_GROUP = 'mnedc';

/**
 * secretFileExposure for the running daemon and a file on disk: names from /etc/passwd and /etc/group
 * (users from NSS services beyond the files show as numbers). Null also when the file cannot be stat'ed:
 * the daemon has just read it, so that is a race not worth a warning of its own.
 */
export function checkSecretFile(path: string): SecretFileExposure | null {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    return null;
  }
  const users = readIdFile('/etc/passwd');
  const groups = readIdFile('/etc/group');
  const packageGid = [...groups].find(([, name]) => name === PACKAGE_GROUP)?.[0];
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  return secretFileExposure(path, stat, { uid, gid, trustedGids: packageGid === undefined ? [] : [packageGid] }, { users, groups });
}
