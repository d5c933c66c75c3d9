// Lints each npm package as it would be published, so a broken package
// cannot land (./scripts/test runs this after the build):
// - publint (--strict): `exports`, `files`, `types` and the packed files agree;
// - @arethetypeswrong/cli: the types resolve for TypeScript users under
//   `bundler` and `node16` (ESM) resolution. The packages are ESM only on
//   purpose (browsers and bundlers), hence `--profile esm-only`: CommonJS
//   `require` and the old `node10` resolution are not checked.
// Both pack the package with `npm pack` first and look at the tarball.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const web = fileURLToPath(new URL('..', import.meta.url));
const packages = ['packages/client', 'packages/react'];
let failed = false;

function run(command, args) {
  console.log(`$ ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { cwd: web, stdio: 'inherit' });
  if (result.status !== 0) {
    console.error(`failed: ${command} ${args.join(' ')} (exit ${result.status ?? result.signal})`);
    failed = true;
  }
}

for (const dir of packages) {
  run('npx', ['--no-install', 'publint', 'run', dir, '--strict']);
  run('npx', ['--no-install', 'attw', '--pack', dir, '--profile', 'esm-only', '--format', 'ascii']);
}
// The size tables in the READMEs and docs/benchmarks.md match this build.
run('node', ['scripts/size.mjs', '--check']);
process.exit(failed ? 1 : 0);
