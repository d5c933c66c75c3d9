// Measures the minified + gzipped size of each package entry, next to
// socket.io-client and centrifuge (devDependencies) bundled the same way,
// and writes the table into each package README and docs/benchmarks.md
// (between `<!-- size:start -->` and `<!-- size:end -->`).
//
// Why this way: what an app pays is its bundler's output for the whole
// entry (every export, as with `import *`), minified and gzipped. esbuild
// with the same settings for every row keeps the comparison fair; peer
// dependencies (react) and our own packages are left out of a row, as an
// app already has them. `--check` fails instead of writing when a table
// is out of date.
import { build } from 'esbuild';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const web = fileURLToPath(new URL('..', import.meta.url));
const check = process.argv.includes('--check');

const rows = [
  {
    name: '`@reeltime/client`',
    entry: '@reeltime/client',
    external: [],
    note: 'the whole client: socket, reconnects, token refresh, close codes, import store',
  },
  {
    name: '`@reeltime/react`',
    entry: '@reeltime/react',
    external: ['react', 'react/*', '@reeltime/client'],
    note: 'provider and hooks, without react and @reeltime/client',
  },
  {
    name: '`@reeltime/react/upload`',
    entry: '@reeltime/react/upload',
    external: ['react', 'react/*', '@reeltime/client', 'tus-js-client'],
    note: 'useUpload, without tus-js-client',
  },
  {
    name: '`@reeltime/react/upload` + tus-js-client',
    entry: '@reeltime/react/upload',
    external: ['react', 'react/*', '@reeltime/client'],
    note: 'what an app adds for uploads',
  },
  {
    name: 'socket.io-client',
    entry: 'socket.io-client',
    external: [],
    note: 'for comparison: its whole entry',
    pkg: 'socket.io-client',
  },
  {
    name: 'centrifuge',
    entry: 'centrifuge',
    external: [],
    note: 'for comparison: its whole entry (JSON codec)',
    pkg: 'centrifuge',
  },
];

function versionOf(pkg) {
  return JSON.parse(readFileSync(`${web}/node_modules/${pkg}/package.json`, 'utf8')).version;
}

async function measure(row) {
  const result = await build({
    // `export *` from the package name: its own `exports` map picks the file, as in an app.
    stdin: { contents: `export * from '${row.entry}';`, resolveDir: web, loader: 'js' },
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    external: row.external,
    write: false,
    logLevel: 'silent',
    define: { 'process.env.NODE_ENV': '"production"' },
  });
  const code = result.outputFiles[0].contents;
  return { min: code.length, gzip: gzipSync(code, { level: 9 }).length };
}

const kib = (bytes) => `${(bytes / 1024).toFixed(1)} KiB`;
const lines = [
  '| entry | min | min+gzip | what it is |',
  '| --- | ---: | ---: | --- |',
];
const results = {};
for (const row of rows) {
  const size = await measure(row);
  results[row.name] = size;
  const name = row.pkg ? `${row.name} ${versionOf(row.pkg)}` : row.name;
  lines.push(`| ${name} | ${kib(size.min)} | **${kib(size.gzip)}** | ${row.note} |`);
}
const esbuildVersion = versionOf('esbuild');
lines.push('', `Measured by \`web/scripts/size.mjs\` (esbuild ${esbuildVersion}, minified ESM for browsers, gzip level 9), run by \`npm run build\`.`);
const table = lines.join('\n');

const clientGzip = results['`@reeltime/client`'].gzip;
if (clientGzip >= 6 * 1024) {
  console.error(`@reeltime/client is ${kib(clientGzip)} min+gzip: the goal is under 6 KiB`);
  process.exitCode = 1;
}

let stale = false;
for (const file of ['packages/client/README.md', 'packages/react/README.md', '../docs/benchmarks.md']) {
  const path = `${web}/${file}`;
  const text = readFileSync(path, 'utf8');
  const pattern = /<!-- size:start -->[\s\S]*?<!-- size:end -->/;
  if (!pattern.test(text)) throw new Error(`${file} has no <!-- size:start --> ... <!-- size:end --> markers`);
  const updated = text.replace(pattern, `<!-- size:start -->\n${table}\n<!-- size:end -->`);
  if (updated === text) continue;
  if (check) {
    console.error(`${file}: the size table is out of date (run npm run size in web/)`);
    stale = true;
  } else {
    writeFileSync(path, updated);
  }
}
console.log(table);
if (stale) process.exitCode = 1;
