// The second peer of the benchmark: the design many Clerk users would write
// for live import progress in JavaScript, implemented the way the docs of
// both libraries show it, so reeltime has an honest comparison besides the
// story's FastAPI design (bench/baseline/app.py).
//
// What it does, and why it is the usual shape:
//
// - Socket.IO 4 on Node's own http server, one process (rooms live in the
//   process's memory; more processes would need the Redis adapter).
// - Authentication in an `io.use` middleware that verifies the token the
//   client puts in the handshake's `auth` payload (`io({ auth: { token } })`
//   in the browser) with `@clerk/backend`'s `verifyToken`:
//     * networkless (the default, as Clerk recommends for latency): the
//       instance's PEM public key as `jwtKey` (CLERK_JWT_KEY);
//     * or with the JWKS: `secretKey` + `apiUrl`, fetched from
//       `<apiUrl>/v1/jwks` and cached by the SDK (SOCKETIO_VERIFY=jwks).
//   `iss` is checked against SOCKETIO_ISSUER and the SDK's default 5 s clock
//   skew applies (the baseline's leeway). A bad token gets a CONNECT_ERROR
//   (`44{"message":"unauthorized"}`), which is how Socket.IO refuses.
// - Each socket joins one room per user (`user:<sub>`); every change is
//   `io.to(room).emit("import", record)`: encoded once, written to every
//   socket of the room.
// - On connect, after joining the room, a `snapshot` event with the user's
//   unfinished imports and the last 50 finished ones (the baseline's
//   snapshot; the connect acknowledgement `40{"sid":..}` is the "ready").
//   Joining and the snapshot happen in one turn of the event loop, so no
//   change can fall between them.
// - Refresh and expiry as the baseline: the token is checked once, at the
//   handshake; there is no in-band refresh and nothing closes a socket when
//   its token expires (the story's design has neither).
// - The same synthetic imports as the baseline: POST /api/imports with
//   `synthetic:?duration_ms=&steps=` (Bearer token verified the same way),
//   steps no closer than 100 ms, versions +1 per change, `updated_at` with
//   millisecond precision; GET /api/imports pages like reeltime's. Imports
//   and users live in memory (the baseline writes a users row per connect
//   with SQLite; Node 20 has no SQLite of its own, and a JS team would reach
//   for an ORM against a real database, which would only add to the connect
//   cost measured here: see docs/benchmarks.md).
//
// Settings (environment): SOCKETIO_LISTEN (host:port), SOCKETIO_ISSUER,
// SOCKETIO_VERIFY (pem | jwks, default pem), CLERK_JWT_KEY (the PEM public
// key, for pem), CLERK_SECRET_KEY and CLERK_API_URL (for jwks),
// SOCKETIO_PING_INTERVAL_MS and SOCKETIO_PING_TIMEOUT_MS (Socket.IO's
// defaults, 25000 and 20000).

"use strict";

const http = require("node:http");
const crypto = require("node:crypto");
const { Server } = require("socket.io");
const { verifyToken } = require("@clerk/backend");

function setting(name, fallback) {
  const value = process.env[name];
  if (value === undefined || value === "") {
    if (fallback === undefined) {
      console.error(`socketio peer: ${name} must be set`);
      process.exit(2);
    }
    return fallback;
  }
  return value;
}

const LISTEN = setting("SOCKETIO_LISTEN", "127.0.0.1:18100");
const ISSUER = setting("SOCKETIO_ISSUER");
const VERIFY = setting("SOCKETIO_VERIFY", "pem");

let verifyOptions;
if (VERIFY === "pem") {
  verifyOptions = { jwtKey: setting("CLERK_JWT_KEY"), issuer: ISSUER };
} else if (VERIFY === "jwks") {
  verifyOptions = {
    secretKey: setting("CLERK_SECRET_KEY"),
    apiUrl: setting("CLERK_API_URL"),
    issuer: ISSUER,
  };
} else {
  console.error(`socketio peer: SOCKETIO_VERIFY must be pem or jwks (got ${VERIFY})`);
  process.exit(2);
}

/** The token's claims, or null when it does not verify (never throws). */
async function claimsOf(token) {
  if (typeof token !== "string" || token === "") {
    return null;
  }
  try {
    const claims = await verifyToken(token, verifyOptions);
    return typeof claims.sub === "string" && claims.sub !== "" ? claims : null;
  } catch {
    return null;
  }
}

// --- imports (synthetic only) -------------------------------------------------

const FINAL = new Set(["completed", "failed", "cancelled"]);
// Like reeltime's synthetic source: steps no closer than its 10-per-second
// progress limit per import.
const MIN_STEP_MS = 100;
/** id -> { user, record } */
const imports = new Map();
/** user -> [id, ...] in creation order */
const byUser = new Map();

const now = () => new Date().toISOString();
const room = (user) => `user:${user}`;

function publish(user, record) {
  record.version += 1;
  record.updated_at = now();
  io.to(room(user)).emit("import", record);
}

function runSynthetic(user, record, durationMs, steps) {
  const start = performance.now();
  const stepMs = Math.max(durationMs / steps, MIN_STEP_MS);
  record.status = "downloading";
  record.stage = "downloading";
  publish(user, record);
  let step = 0;
  const tick = () => {
    step += 1;
    record.progress = step / steps;
    record.bytes_done = step;
    record.bytes_total = steps;
    if (step === steps) {
      record.status = "completed";
      record.stage = null;
      record.result = { synthetic: true };
    }
    publish(user, record);
    if (step < steps) {
      setTimeout(tick, Math.max(0, start + stepMs * (step + 1) - performance.now()));
    }
  };
  setTimeout(tick, Math.max(0, start + stepMs - performance.now()));
}

function snapshotOf(user) {
  const mine = (byUser.get(user) || []).map((id) => imports.get(id).record);
  const unfinished = mine.filter((r) => !FINAL.has(r.status));
  const finished = mine.filter((r) => FINAL.has(r.status)).slice(-50);
  return unfinished.concat(finished);
}

// --- HTTP -----------------------------------------------------------------------

function send(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function currentUser(req, res) {
  const header = req.headers.authorization || "";
  const claims = header.startsWith("Bearer ") ? await claimsOf(header.slice(7)) : null;
  if (!claims) {
    send(res, 401, { detail: "bad token" }, { "www-authenticate": "Bearer" });
    return null;
  }
  return claims.sub;
}

const MAX_BODY = 64 * 1024;

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new Error("body too large"));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch {
        reject(new Error("body is not JSON"));
      }
    });
    req.on("error", reject);
  });
}

function positiveInt(text, fallback) {
  if (text === null) {
    return fallback;
  }
  const value = Number.parseInt(text, 10);
  return Number.isFinite(value) && value >= 0 ? value : NaN;
}

async function createImport(req, res) {
  const user = await currentUser(req, res);
  if (user === null) {
    return;
  }
  let body;
  try {
    body = await readJson(req);
  } catch (err) {
    send(res, 400, { detail: err.message });
    return;
  }
  const url = String((body && body.url) || "");
  if (!url.startsWith("synthetic:")) {
    send(res, 400, { detail: "this peer only runs synthetic: imports" });
    return;
  }
  const query = new URLSearchParams(url.slice(url.indexOf("?") + 1 || url.length));
  const durationMs = positiveInt(query.get("duration_ms"), 5000);
  const steps = Math.max(1, positiveInt(query.get("steps"), 50));
  if (Number.isNaN(durationMs) || Number.isNaN(steps) || steps > 100000) {
    send(res, 400, { detail: "duration_ms and steps must be whole numbers" });
    return;
  }
  const at = now();
  const record = {
    id: crypto.randomUUID(),
    status: "queued",
    stage: null,
    progress: 0.0,
    bytes_done: 0,
    bytes_total: null,
    version: 0,
    attempt: 1,
    source_url: url,
    title: (body && body.title) || "synthetic",
    error: null,
    result: null,
    queue_position: null,
    created_at: at,
    updated_at: at,
  };
  imports.set(record.id, { user, record });
  if (!byUser.has(user)) {
    byUser.set(user, []);
  }
  byUser.get(user).push(record.id);
  publish(user, record);
  send(res, 201, record);
  runSynthetic(user, record, durationMs, steps);
}

async function listImports(req, res, url) {
  const user = await currentUser(req, res);
  if (user === null) {
    return;
  }
  let ids = (byUser.get(user) || []).slice().reverse();
  const before = url.searchParams.get("before");
  if (before !== null && ids.includes(before)) {
    ids = ids.slice(ids.indexOf(before) + 1);
  }
  const asked = Number.parseInt(url.searchParams.get("limit") || "50", 10);
  const limit = Math.max(1, Math.min(Number.isFinite(asked) ? asked : 50, 200));
  const page = ids.slice(0, limit).map((id) => imports.get(id).record);
  const nextCursor = ids.length > limit ? page[page.length - 1].id : null;
  send(res, 200, { imports: page, next_cursor: nextCursor });
}

const server = http.createServer((req, res) => {
  let url;
  try {
    url = new URL(req.url, "http://peer");
  } catch {
    send(res, 400, { detail: "bad request target" });
    return;
  }
  let handled;
  if (url.pathname === "/healthz" && req.method === "GET") {
    send(res, 200, "ok");
    return;
  } else if (url.pathname === "/api/imports" && req.method === "POST") {
    handled = createImport(req, res);
  } else if (url.pathname === "/api/imports" && req.method === "GET") {
    handled = listImports(req, res, url);
  } else {
    send(res, 404, { detail: "not found" });
    return;
  }
  handled.catch((err) => {
    console.error(`socketio peer: ${req.method} ${url.pathname}: ${err && err.message}`);
    if (!res.headersSent) {
      send(res, 500, { detail: "internal error" });
    }
  });
});

// --- Socket.IO ------------------------------------------------------------------

// Socket.IO's own defaults (ping every 25 s, 20 s to answer) unless the
// smoke test asks for quicker pings to prove the client answers them.
const io = new Server(server, {
  serveClient: false,
  pingInterval: Number.parseInt(setting("SOCKETIO_PING_INTERVAL_MS", "25000"), 10),
  pingTimeout: Number.parseInt(setting("SOCKETIO_PING_TIMEOUT_MS", "20000"), 10),
});

io.use(async (socket, next) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  const claims = await claimsOf(token);
  if (!claims) {
    next(new Error("unauthorized"));
    return;
  }
  socket.data.user = claims.sub;
  next();
});

io.on("connection", (socket) => {
  const user = socket.data.user;
  socket.join(room(user));
  socket.emit("snapshot", snapshotOf(user));
});

const colon = LISTEN.lastIndexOf(":");
const host = LISTEN.slice(0, colon);
const port = Number.parseInt(LISTEN.slice(colon + 1), 10);
server.listen(port, host, () => {
  console.error(
    `socketio peer: listening on ${host}:${port} (socket.io at /socket.io/, verify ${VERIFY}, iss ${ISSUER})`,
  );
});

function shutdown() {
  io.close();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
