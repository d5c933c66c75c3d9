import { defineConfig } from 'vite';

/**
 * `npm run dev` serves the page on http://localhost:5173 and forwards
 * `/api` (REST and the progress socket) and `/dev` (the server's
 * development token issuer) to a Reeltime server at `REELTIME_URL`
 * (default http://127.0.0.1:8080), so page and server share one origin.
 */
const target = process.env.REELTIME_URL ?? 'http://127.0.0.1:8080';
export default defineConfig({
  server: {
    proxy: {
      '/api': { target, ws: true, changeOrigin: true },
      '/dev': { target, changeOrigin: true },
    },
  },
});
