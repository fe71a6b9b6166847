import { strict as assert } from 'node:assert';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { checkSecretFile, parseIdFile, secretFileExposure } from '../src/secret-file';

const FILE = '/etc/mnedc/client.ini';
const ROOT = 0;
const MNEDC = 998;
const ALICE = 1000;
const ADM = 4;
const names = {
  users: new Map([[ROOT, 'root'], [MNEDC, 'mnedc'], [ALICE, 'alice']]),
  groups: new Map([[ROOT, 'root'], [MNEDC, 'mnedc'], [ALICE, 'alice'], [ADM, 'adm']]),
};
/** The packaged daemon: User=mnedc Group=mnedc. */
const service = { uid: MNEDC, gid: MNEDC };
/** Root running from a source tree; the package's group, where it exists, is trusted too. */
const rootFromSource = { uid: ROOT, gid: ROOT, trustedGids: [MNEDC] };

const stat = (mode: number, uid: number, gid: number) => ({ mode: 0o100000 | mode, uid, gid });

describe('secretFileExposure', () => {
  it('says nothing of the packaged file (0640 root:mnedc) or one only the daemon and root can read', () => {
    assert.equal(secretFileExposure(FILE, stat(0o640, ROOT, MNEDC), service, names), null);
    assert.equal(secretFileExposure(FILE, stat(0o600, MNEDC, MNEDC), service, names), null);
    assert.equal(secretFileExposure(FILE, stat(0o600, ROOT, ROOT), rootFromSource, names), null);
    assert.equal(secretFileExposure(FILE, stat(0o640, ROOT, ROOT), rootFromSource, names), null, 'root group, root daemon');
    assert.equal(secretFileExposure(FILE, stat(0o640, ROOT, MNEDC), rootFromSource, names), null, 'the installed file, run from source');
    assert.equal(secretFileExposure(FILE, stat(0o600, ROOT, ADM), rootFromSource, names), null, 'a group without read');
  });

  it('names the file, the readers, mode, owner and group, and the fix for the 0644 root:root file earlier packages left', () => {
    const exposure = secretFileExposure(FILE, stat(0o644, ROOT, ROOT), service, names);
    assert.deepEqual(exposure, {
      message: `${FILE} holds the join secret but every user and group root can read it (mode 0644, owner root, group root); ` +
        `anyone holding the secret can join the network. Fix: chgrp mnedc ${FILE} && chmod 0640 ${FILE}`,
      mode: '0644',
      owner: 'root',
      group: 'root',
      fix: `chgrp mnedc ${FILE} && chmod 0640 ${FILE}`,
    });
  });

  it('world-readable: the fix keeps the daemon a reader, through its group or as the owner', () => {
    assert.equal(secretFileExposure(FILE, stat(0o604, ROOT, ROOT), service, names)?.fix, `chgrp mnedc ${FILE} && chmod 0640 ${FILE}`);
    assert.equal(secretFileExposure(FILE, stat(0o644, ROOT, MNEDC), service, names)?.fix, `chmod 0640 ${FILE}`);
    assert.equal(secretFileExposure(FILE, stat(0o644, MNEDC, MNEDC), service, names)?.fix, `chmod 0640 ${FILE}`);
    assert.equal(secretFileExposure(FILE, stat(0o644, ROOT, ROOT), rootFromSource, names)?.fix, `chmod 0640 ${FILE}`);
    assert.equal(secretFileExposure(FILE, stat(0o666, ROOT, MNEDC), service, names)?.fix, `chmod 0640 ${FILE}`, 'nobody else writes either');
  });

  it('group-readable by a group other than the daemon\'s', () => {
    const adm = secretFileExposure(FILE, stat(0o640, ROOT, ADM), service, names);
    assert.match(adm!.message, /but group adm can read it \(mode 0640, owner root, group adm\)/);
    assert.equal(adm!.fix, `chgrp mnedc ${FILE}`);
    assert.equal(secretFileExposure(FILE, stat(0o640, MNEDC, ADM), service, names)?.fix, `chmod 0600 ${FILE}`, 'the daemon owns it');
    assert.equal(secretFileExposure(FILE, stat(0o640, ROOT, ADM), rootFromSource, names)?.fix, `chmod 0600 ${FILE}`);
  });

  it('owned by another user, who can read it and change its mode', () => {
    const alice = secretFileExposure(FILE, stat(0o600, ALICE, ALICE), rootFromSource, names);
    assert.match(alice!.message, /but user alice can read it \(mode 0600, owner alice, group alice\)/);
    assert.equal(alice!.fix, `chown root ${FILE}`);
    const all = secretFileExposure(FILE, stat(0o644, ALICE, ALICE), service, names);
    assert.match(all!.message, /but every user, group alice and user alice can read it/);
    assert.equal(all!.fix, `chown root:mnedc ${FILE} && chmod 0640 ${FILE}`);
  });

  it('shows unknown IDs as numbers and quotes a path the shell would split', () => {
    const odd = secretFileExposure('/tmp/my client.ini', stat(0o644, 4242, 4343), { uid: 7, gid: 8 });
    assert.match(odd!.message, /\(mode 0644, owner 4242, group 4343\)/);
    assert.equal(odd!.fix, "chown 0:8 '/tmp/my client.ini' && chmod 0640 '/tmp/my client.ini'");
  });
});

describe('parseIdFile', () => {
  it('maps IDs to the first name listed for them, skipping what is not an entry', () => {
    const text = 'root:x:0:0:root:/root:/bin/bash\n# comment\n\nmnedc:x:998:998::/var/lib/mnedc:/usr/sbin/nologin\n' +
      'toor:x:0:0::/:/bin/sh\nbroken\n+nis::::\n';
    assert.deepEqual([...parseIdFile(text)], [[0, 'root'], [998, 'mnedc']]);
    assert.deepEqual([...parseIdFile('adm:x:4:syslog,alice\n')], [[4, 'adm']]);
  });
});

describe('checkSecretFile', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mnedc-secret-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the mode of the file on disk', () => {
    const file = path.join(dir, 'client.ini');
    writeFileSync(file, 'join = x\n');
    chmodSync(file, 0o644);
    assert.equal(checkSecretFile(file)?.mode, '0644');
    assert.match(checkSecretFile(file)!.message, /client\.ini holds the join secret but every user/);
    chmodSync(file, 0o600);
    assert.equal(checkSecretFile(file), null);
    assert.equal(checkSecretFile(path.join(dir, 'gone.ini')), null);
  });
});
