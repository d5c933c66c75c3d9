import { defineConfig } from 'vite';

/**
 * `npm run dev` serves the app on http://localhost:5173 and forwards
 * `/api` (REST, tus uploads and the progress socket) to a Reeltime server,
 * so the app and the server share one origin. Set `REELTIME_URL` for a
 * server elsewhere than http://127.0.0.1:8080.
 */
export default defineConfig({
  oxc: { jsx: { runtime: 'automatic' } },
  server: {
    proxy: {
      '/api': { target: process.env.REELTIME_URL ?? 'http://127.0.0.1:8080', ws: true, changeOrigin: true },
    },
  },
});
