#!/usr/bin/env node
// One JavaScript file per program, so packages ship no node_modules tree, with the native addons the
// daemons load copied beside their bundle:
//   build/bundle/{mnedcd-server,mnedcd-client,mnedcctl}.js, mnedc_tun.node, notify.node
// Usage: node scripts/bundle.js [OUTDIR]   (run after the TypeScript build)
'use strict';
const { build } = require('esbuild');
const { copyFileSync, mkdirSync, chmodSync } = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const out = path.resolve(process.argv[2] || path.join(root, 'build', 'bundle'));
mkdirSync(out, { recursive: true });

// sd-notify finds its addon with `bindings`, which searches the package tree that a bundle no longer has;
// in a bundle the addon sits beside the program instead.
const bindingsBesideBundle = {
  name: 'bindings-beside-bundle',
  setup(build) {
    build.onResolve({ filter: /^bindings$/ }, () => ({ path: 'bindings', namespace: 'beside' }));
    build.onLoad({ filter: /.*/, namespace: 'beside' }, () => ({
      contents: "module.exports = (name) => require(require('path').join(__dirname, name.endsWith('.node') ? name : name + '.node'));",
      loader: 'js',
    }));
  },
};

const programs = {
  'mnedcd-server': 'packages/server/dist/src/main.js',
  'mnedcd-client': 'packages/client/dist/src/main.js',
  mnedcctl: 'packages/ctl/dist/src/main.js',
};
async function main() {
for (const [name, entry] of Object.entries(programs)) {
  const file = path.join(out, `${name}.js`);
  await build({
    entryPoints: [path.join(root, entry)],
    outfile: file,
    bundle: true,
    platform: 'node',
    target: 'node18',
    format: 'cjs',
    banner: { js: '#!/usr/bin/node' },
    legalComments: 'none',
    plugins: [bindingsBesideBundle],
    logLevel: 'warning',
  });
  chmodSync(file, 0o755);
}
copyFileSync(path.join(root, 'packages/tun/build/Release/mnedc_tun.node'), path.join(out, 'mnedc_tun.node'));
copyFileSync(require.resolve('sd-notify/build/Release/notify.node', { paths: [root] }), path.join(out, 'notify.node'));
console.log(`bundled ${Object.keys(programs).join(', ')} into ${path.relative(process.cwd(), out) || '.'}`);
}

main().catch((err) => {
  console.error(`bundle: ${err.message}`);
  process.exit(1);
});
