/// <reference types="vitest/config" />
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

/**
 * Build settings. The built `dist/` is committed and served by the Rust
 * server, and CI rebuilds it and checks `git diff --exit-code web/dist`, so
 * file names carry no content hash and the output is one JS and one CSS file.
 */
export default defineConfig({
  base: '/',
  oxc: {
    jsx: { runtime: 'automatic' },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    rolldownOptions: {
      output: {
        entryFileNames: 'assets/app.js',
        chunkFileNames: 'assets/[name].js',
        assetFileNames: (asset) =>
          asset.names.some((name) => name.endsWith('.css')) ? 'assets/app.css' : 'assets/[name][extname]',
      },
    },
  },
  server: {
    // `npm run dev` against a `reeltime` running on the default address.
    proxy: {
      '/api': { target: 'http://127.0.0.1:8080', ws: true },
      '/dev': 'http://127.0.0.1:8080',
    },
  },
  test: {
    include: ['src/**/*.test.{ts,tsx}', 'packages/*/src/**/*.test.{ts,tsx}'],
    // Unit tests run on the packages' sources; the build (and so the page
    // served by the server) uses their built `dist/`, as an outside app would.
    alias: {
      '@reeltime/client': fileURLToPath(new URL('./packages/client/src/index.ts', import.meta.url)),
      '@reeltime/react/upload': fileURLToPath(new URL('./packages/react/src/upload.ts', import.meta.url)),
      '@reeltime/react': fileURLToPath(new URL('./packages/react/src/index.ts', import.meta.url)),
      // Tests run in Node (with happy-dom for a browser): take tus-js-client's
      // browser build (Blob, XMLHttpRequest, localStorage), as a bundler does
      // through its `browser` field, not the Node one (Buffer, streams).
      'tus-js-client': fileURLToPath(new URL('./node_modules/tus-js-client/lib.esm/browser/index.js', import.meta.url)),
    },
    environment: 'node',
    restoreMocks: true,
  },
});
