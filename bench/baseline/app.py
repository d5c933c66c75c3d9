"""The design handed to us in the user story (shared/story/user-story-06),
implemented faithfully so the benchmark has something honest to compare
reeltime with.

What the story's backend does, and what this file does the same way:

- FastAPI on uvicorn, one process (the per-user channels live in process
  memory, so more uvicorn workers would split users' tabs across processes).
- ``verify_clerk_jwt(token)``: PyJWT with a ``PyJWKClient`` against the same
  JWKS reeltime is pointed at (RS256, ``iss`` checked, 5 s leeway).
- ``get_or_create_user(claims, db)`` on every connection (SQLite via
  aiosqlite: the story's ``db``).
- On a bad token, ``await websocket.close(code=1008)`` before ``accept()``,
  as in the story (uvicorn turns a close before accept into an HTTP 403).
- ``async for message in progress_channel(user.id): await
  websocket.send_json(message)``: an in-process channel per user; every
  message is serialized again for each socket.

What the story does not have and the benchmark needs, added in the same
style: ``ready`` and ``snapshot`` messages after accept (so the client can
time a connect), ``POST /api/imports`` accepting ``synthetic:?duration_ms=
&steps=`` (a task publishing progress, like reeltime's synthetic imports),
and ``GET /api/imports`` (the final versions the checks compare with).
Import state is kept in memory, which spares the baseline the database
writes reeltime does for every change.

BASELINE_CHANNEL chooses the channel:

- ``broadcast`` (default): one channel per user that holds one
  asyncio.Queue per subscribed socket, so every tab gets every message.
- ``queue``: literally one asyncio.Queue per user shared by the user's
  sockets. With several tabs each message reaches only one of them, which
  breaks the story's own "each tab gets its own WS, all receive updates";
  kept to show that.
"""

import asyncio
import datetime
import os
import uuid
from collections import defaultdict
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import aiosqlite
import jwt
from fastapi import FastAPI, Header, HTTPException, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from jwt import PyJWKClient

JWKS_URL = os.environ["BASELINE_JWKS_URL"]
ISSUER = os.environ["BASELINE_ISSUER"]
DB_PATH = os.environ.get("BASELINE_DB", "baseline.db")
CHANNEL = os.environ.get("BASELINE_CHANNEL", "broadcast")

jwks_client = PyJWKClient(JWKS_URL)
db: aiosqlite.Connection | None = None


@asynccontextmanager
async def lifespan(_app):
    global db
    db = await aiosqlite.connect(DB_PATH)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute(
        "CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT, created_at TEXT)"
    )
    await db.commit()
    yield
    await db.close()


app = FastAPI(lifespan=lifespan)


async def verify_clerk_jwt(token: str) -> dict:
    signing_key = jwks_client.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        signing_key.key,
        algorithms=["RS256"],
        issuer=ISSUER,
        leeway=5,
        options={"require": ["exp", "sub", "iss"], "verify_aud": False},
    )


async def get_or_create_user(claims: dict, db: aiosqlite.Connection) -> dict:
    user_id = claims["sub"]
    await db.execute(
        "INSERT INTO users (id, email, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (user_id, claims.get("email"), now()),
    )
    await db.commit()
    async with db.execute("SELECT id, email, created_at FROM users WHERE id = ?", (user_id,)) as cur:
        row = await cur.fetchone()
    return {"id": row[0], "email": row[1], "created_at": row[2]}


def now() -> str:
    at = datetime.datetime.now(datetime.timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


# --- the per-user progress channel -------------------------------------------------


class Channel:
    """One per user. ``broadcast``: a queue per subscriber; ``queue``: one
    queue the user's sockets share."""

    def __init__(self) -> None:
        self.subscribers: set[asyncio.Queue] = set()
        self.shared = asyncio.Queue()

    def publish(self, message: dict) -> None:
        if CHANNEL == "queue":
            self.shared.put_nowait(message)
            return
        for queue in self.subscribers:
            queue.put_nowait(message)


channels: dict[str, Channel] = defaultdict(Channel)


def subscribe(user_id: str) -> asyncio.Queue:
    channel = channels[user_id]
    queue = channel.shared if CHANNEL == "queue" else asyncio.Queue()
    channel.subscribers.add(queue)
    return queue


def unsubscribe(user_id: str, queue: asyncio.Queue) -> None:
    channel = channels.get(user_id)
    if channel is not None:
        channel.subscribers.discard(queue)


async def progress_channel(queue: asyncio.Queue):
    while True:
        yield await queue.get()


# --- imports (synthetic only) --------------------------------------------------------

imports: dict[str, tuple[str, dict]] = {}
by_user: dict[str, list[str]] = defaultdict(list)
FINAL = {"completed", "failed", "cancelled"}


def publish(user_id: str, record: dict) -> None:
    record["version"] += 1
    record["updated_at"] = now()
    channels[user_id].publish({"type": "import", "import": dict(record)})


# Like reeltime's synthetic source: steps no closer than its 10-per-second
# progress limit per import.
MIN_STEP_SECS = 0.1


async def run_synthetic(user_id: str, record: dict, duration_ms: int, steps: int) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    step_secs = max(duration_ms / 1000 / steps, MIN_STEP_SECS)
    record["status"] = "downloading"
    record["stage"] = "downloading"
    publish(user_id, record)
    for step in range(1, steps + 1):
        await asyncio.sleep(max(0.0, start + step_secs * step - loop.time()))
        record["progress"] = step / steps
        record["bytes_done"] = step
        record["bytes_total"] = steps
        if step == steps:
            record["status"] = "completed"
            record["stage"] = None
            record["result"] = {"synthetic": True}
        publish(user_id, record)


async def current_user(authorization: str | None) -> dict:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "missing token", headers={"WWW-Authenticate": "Bearer"})
    try:
        claims = await verify_clerk_jwt(authorization[len("Bearer ") :])
    except Exception:
        raise HTTPException(401, "bad token", headers={"WWW-Authenticate": "Bearer"})
    return await get_or_create_user(claims, db)


@app.post("/api/imports", status_code=201)
async def create_import(body: dict, authorization: str | None = Header(default=None)):
    user = await current_user(authorization)
    url = str(body.get("url", ""))
    parts = urlsplit(url)
    if parts.scheme != "synthetic":
        raise HTTPException(400, "this baseline only runs synthetic: imports")
    query = parse_qs(parts.query)
    duration_ms = int(query.get("duration_ms", ["5000"])[0])
    steps = max(1, int(query.get("steps", ["50"])[0]))
    at = now()
    record = {
        "id": str(uuid.uuid4()),
        "status": "queued",
        "stage": None,
        "progress": 0.0,
        "bytes_done": 0,
        "bytes_total": None,
        "version": 0,
        "attempt": 1,
        "source_url": url,
        "title": body.get("title") or "synthetic",
        "error": None,
        "result": None,
        "queue_position": None,
        "created_at": at,
        "updated_at": at,
    }
    imports[record["id"]] = (user["id"], record)
    by_user[user["id"]].append(record["id"])
    publish(user["id"], record)
    created = dict(record)
    asyncio.create_task(run_synthetic(user["id"], record, duration_ms, steps))
    return created


@app.get("/api/imports")
async def list_imports(
    limit: int = 50, before: str | None = None, authorization: str | None = Header(default=None)
):
    user = await current_user(authorization)
    ids = list(reversed(by_user.get(user["id"], [])))
    if before is not None and before in ids:
        ids = ids[ids.index(before) + 1 :]
    limit = max(1, min(limit, 200))
    page = [dict(imports[i][1]) for i in ids[:limit]]
    next_cursor = page[-1]["id"] if len(ids) > limit else None
    return {"imports": page, "next_cursor": next_cursor}


@app.get("/healthz")
async def healthz():
    return JSONResponse("ok")


# --- the story's WebSocket handler ---------------------------------------------------


@app.websocket("/api/ws/progress")
async def websocket_progress(websocket: WebSocket, token: str = Query(...)):
    # Verify Clerk token
    try:
        claims = await verify_clerk_jwt(token)
        user = await get_or_create_user(claims, db)
    except Exception:
        await websocket.close(code=1008)  # Policy Violation
        return

    await websocket.accept()

    # Added for the benchmark: subscribe, then `ready` and a snapshot like
    # reeltime's; changes already in the snapshot are not sent again.
    queue = subscribe(user["id"])
    try:
        await websocket.send_json(
            {
                "type": "ready",
                "user_id": user["id"],
                "connection_id": str(uuid.uuid4()),
                "expires_at": claims["exp"],
                "heartbeat_ms": 20000,
                "protocol": 1,
            }
        )
        mine = [imports[i][1] for i in by_user.get(user["id"], [])]
        unfinished = [dict(r) for r in mine if r["status"] not in FINAL]
        finished = [dict(r) for r in mine if r["status"] in FINAL][-50:]
        snapshot = unfinished + finished
        sent = {record["id"]: record["version"] for record in snapshot}
        await websocket.send_json({"type": "snapshot", "imports": snapshot})

        # Subscribe to user's progress channel
        async for message in progress_channel(queue):
            record = message["import"]
            if sent.get(record["id"], 0) >= record["version"]:
                continue
            await websocket.send_json(message)
    except WebSocketDisconnect:
        pass
    finally:
        unsubscribe(user["id"], queue)
