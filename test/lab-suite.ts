/** Shared set-up of the lab test files: one lab with a running overlay per describe block. */
import { strict as assert } from 'node:assert';
import path from 'node:path';
import { after, before } from 'node:test';
import { Lab, namespacesWithPrefix, Overlay, REPO_ROOT, type Daemon, type Device } from '@mnedc/lab';

type OverlayOptions = Parameters<typeof Overlay.start>[1];

export const TRANSFER = path.join(REPO_ROOT, 'packages/lab/dist/src/transfer.js');
export const JUNK = path.join(REPO_ROOT, 'packages/lab/dist/src/junk.js');
export const skipUnlessRoot = process.getuid?.() !== 0 ? 'needs root for network namespaces' : false;

export interface LabContext {
  lab: Lab;
  overlay: Overlay;
  ips: Record<Device | 'srv', string>;
}

/**
 * Registers before/after hooks in the current describe block and returns the context they fill. The lab
 * is torn down also when tests fail, and the after hook checks that nothing was left behind. `prepare`
 * runs on the lab before any daemon starts.
 */
export function withOverlayLab(options?: OverlayOptions, prepare?: (lab: Lab) => Promise<void>): LabContext {
  const context = {} as LabContext;
  before(async () => {
    context.lab = await Lab.create();
    await prepare?.(context.lab);
    context.overlay = await Overlay.start(context.lab, options);
    context.ips = await context.overlay.overlayIps();
  });
  after(() => tearDown(context));
  return context;
}

/**
 * Like withOverlayLab, but no daemon runs: each test starts its own on `overlay`. `daemons` are
 * SIGKILLed first if a failed test left them running.
 */
export function withBareLab(daemons: Daemon[] = []): Omit<LabContext, 'ips'> {
  const context = {} as LabContext;
  before(async () => {
    context.lab = await Lab.create();
    context.overlay = new Overlay(context.lab);
  });
  after(async () => {
    for (const d of daemons) if (!d.exited) d.signal('SIGKILL');
    await tearDown(context);
  });
  return context;
}

async function tearDown(context: Partial<LabContext>): Promise<void> {
  await context.lab?.destroy();
  context.overlay?.dispose();
  if (context.lab) assert.deepEqual(await namespacesWithPrefix(context.lab.prefix), [], 'the lab left namespaces behind');
}
