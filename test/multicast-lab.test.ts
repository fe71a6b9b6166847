/**
 * Unmodified applications find each other across the NATs (issue 17, acceptance 1 and 2), with the real
 * daemons in the lab: avahi-daemon on c (two NATs deep) and on d (behind another NAT), a service
 * published with avahi-publish on one is resolved by avahi-browse on the other to its overlay address,
 * over IPv4 and IPv6; an SSDP M-SEARCH from one device is answered by a responder on the other, over IPv4
 * and IPv6.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { avahiUnavailable, Daemon, SSDP_CLI, startAvahi, type Avahi, type Device } from '@mnedc/lab';
import { skipUnlessRoot, withOverlayLab } from './lab-suite';

interface Status { ip: string; ip6?: string }
interface GroupStats { group: string; received: number; delivered: number; rateLimited: number; duplicate: number }

const skip = skipUnlessRoot || avahiUnavailable() || false;

describe('discovery by unmodified applications across the NATs', { skip, timeout: 240_000 }, () => {
  const ctx = withOverlayLab();
  const status = async (node: Device): Promise<Status> => (await ctx.overlay.ctl(node, ['status', '--json'])).json as Status;
  const multicast = async (): Promise<Record<string, GroupStats>> => {
    const stats = (await ctx.overlay.ctl('srv', ['stats', '--json'])).json as { multicast: GroupStats[] };
    return Object.fromEntries(stats.multicast.map((g) => [g.group, g]));
  };

  it('avahi-browse on d resolves a service avahi-publish announced on c to c\'s overlay address within 5 s, over IPv4 and IPv6', async (t) => {
    const [c, d] = [await status('c'), await status('d')];
    const avahis: Avahi[] = [];
    try {
      for (const node of ['c', 'd'] as Device[]) {
        avahis.push(await startAvahi(ctx.lab.ns(node), { interfaces: ['mnedc0'], ipv6: true, hostName: `overlay-${node}` }));
      }
      const [onC, onD] = avahis as [Avahi, Avahi];
      const withdraw = await onC.publish('printer on c', '_test._tcp', 4242);
      for (const protocol of ['ipv4', 'ipv6'] as const) {
        const started = Date.now();
        const found = await onD.browse('_test._tcp', { timeoutMs: 5_000, protocol });
        const took = Date.now() - started;
        const service = found.find((s) => s.name === 'printer on c');
        assert.ok(service, `over ${protocol}, d found ${JSON.stringify(found)}; d's avahi said:\n${onD.log().slice(-20).join('\n')}`);
        assert.equal(service.address, protocol === 'ipv4' ? c.ip : c.ip6, `resolved over ${protocol} to c's overlay address`);
        assert.equal(service.port, 4242);
        assert.equal(service.interface, 'mnedc0');
        assert.ok(took < 5_000, `${took} ms`);
        t.diagnostic(`avahi-browse on d resolved c's service over ${protocol} to ${service.address} in ${took} ms`);
      }
      // And the other way round, so neither side is special.
      const back = await onD.publish('scanner on d', '_test._tcp', 4343);
      const fromC = await onC.browse('_test._tcp', { timeoutMs: 5_000, protocol: 'ipv4' });
      assert.equal(fromC.find((s) => s.name === 'scanner on d')?.address, d.ip, JSON.stringify(fromC));
      await back();
      await withdraw();
    } finally {
      await Promise.all(avahis.map((a) => a.stop()));
    }
    const stats = await multicast();
    assert.ok(stats.mdns!.delivered > 0 && stats.mdns!.rateLimited === 0, JSON.stringify(stats.mdns));
  });

  it('an SSDP M-SEARCH from c is answered by a responder on d, over IPv4 (239.255.255.250) and IPv6 (ff02::c)', async (t) => {
    const [c, d] = [await status('c'), await status('d')];
    for (const ipv6 of [false, true]) {
      const where = ipv6 ? ['--ipv6', '--interface', 'mnedc0'] : ['--interface-address'];
      const responder = new Daemon(`ssdp responder${ipv6 ? ' (IPv6)' : ''}`, ctx.lab.spawn('d', [process.execPath, SSDP_CLI, 'respond',
        ...(ipv6 ? where : [...where, d.ip]), '--usn', 'uuid:0f1e2d3c-mnedc-lab-d', '--location', `http://${d.ip}:8080/desc.xml`], { pipe: true }));
      await responder.waitForRaw(/"event":"ready"/);
      const search = await ctx.lab.exec('c', [process.execPath, SSDP_CLI, 'search', ...(ipv6 ? where : [...where, c.ip]),
        '--st', 'ssdp:all', '--timeout-ms', '2000'], { timeoutMs: 15_000 });
      responder.signal('SIGTERM');
      await responder.waitExit(10_000);
      assert.equal(search.code, 0, search.stderr);
      const answers = search.stdout.split('\n').filter(Boolean).map((line) => JSON.parse(line) as { address: string; usn: string });
      const fromD = answers.filter((a) => a.usn.startsWith('uuid:0f1e2d3c-mnedc-lab-d'));
      assert.ok(fromD.length > 0, `over ${ipv6 ? 'IPv6' : 'IPv4'} c got ${search.stdout}${search.stderr}`);
      // IPv4: the answer comes from d's overlay address; IPv6: from its link-local twin (fe80::<d's IPv4>).
      const [a, b, x, y] = d.ip.split('.').map(Number) as [number, number, number, number];
      const expected = ipv6 ? `fe80::${((a << 8) | b).toString(16)}:${((x << 8) | y).toString(16)}%mnedc0` : d.ip;
      assert.equal(fromD[0]!.address, expected);
      t.diagnostic(`SSDP over ${ipv6 ? 'IPv6' : 'IPv4'}: ${fromD.length} answers from ${fromD[0]!.address}`);
    }
  });
});
