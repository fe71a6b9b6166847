import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { FD_MARGIN, fdLimitWarning, fdsNeeded, parseOpenFileLimit } from '../src/fd-limit';

describe('open-file limit', () => {
  it('reads the soft and hard limit from /proc/PID/limits', () => {
    const text = 'Limit                     Soft Limit           Hard Limit           Units     \n' +
      'Max processes             63432                63432                processes \n' +
      'Max open files            1024                 524288               files     \n';
    assert.deepEqual(parseOpenFileLimit(text), { soft: 1024, hard: 524288 });
    assert.deepEqual(parseOpenFileLimit('Max open files            unlimited            unlimited            files\n'), { soft: Infinity, hard: Infinity });
    assert.equal(parseOpenFileLimit('Max processes 1 1 processes\n'), undefined);
  });

  it('needs a descriptor per device (max_clients, or the subnet when 0 or larger) and per handshake, plus a margin', () => {
    assert.equal(fdsNeeded(0, 253, 1024), 253 + 1024 + FD_MARGIN);
    assert.equal(fdsNeeded(100, 253, 1024), 100 + 1024 + FD_MARGIN);
    assert.equal(fdsNeeded(5000, 253, 1024), 253 + 1024 + FD_MARGIN, 'never more devices than the pool has addresses');
    assert.equal(fdLimitWarning({ soft: 1533, hard: 1533 }, 0, 253, 1024), undefined);
    assert.equal(fdLimitWarning(undefined, 0, 65533, 1024), undefined, 'no warning where the limit is unknown');
    assert.match(fdLimitWarning({ soft: 1024, hard: 4096 }, 10_000, 65533, 1024)!.message,
      /^The open-file limit is 1024, but 11280 may be needed: 10000 devices \(\[limits\] max_clients\) \+ 1024 handshakes .*Raise LimitNOFILE=/);
  });
});
