"""The app's backend beside Reeltime: a FastAPI service that

- verifies the same Clerk session tokens the browser sends Reeltime, for
  its own routes (PyJWT against the issuer's JWKS);
- starts "render" jobs that its own worker runs, and makes each one an
  external import in Reeltime (POST /api/server/imports with the server API
  key), so the user's tabs show live progress;
- reports the worker's progress, completion or failure to Reeltime, and
  stops a job when Reeltime answers 409 import_cancelled (the user
  cancelled it in the browser);
- receives Reeltime's webhooks (POST /webhooks/reeltime), verified with the
  `standardwebhooks` package, and records each render's events (a real app
  would, e.g., email the user when its import completes).

Settings (environment): REELTIME_URL, REELTIME_SERVER_KEY (rt_sk_...),
CLERK_JWKS_URL, CLERK_ISSUER, REELTIME_WEBHOOK_SECRET (whsec_..., the same
value as the server's), RENDER_STEP_SECONDS (default 0.2).
See README.md; docs/integration.md for the server API.
"""

import asyncio
import os
import uuid

import httpx
import jwt
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from pydantic import BaseModel
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

REELTIME_URL = os.environ["REELTIME_URL"]
SERVER_KEY = os.environ["REELTIME_SERVER_KEY"]
CLERK_JWKS_URL = os.environ["CLERK_JWKS_URL"]
CLERK_ISSUER = os.environ["CLERK_ISSUER"]
STEP_SECONDS = float(os.environ.get("RENDER_STEP_SECONDS", "0.2"))
WEBHOOK_SECRET = os.environ.get("REELTIME_WEBHOOK_SECRET")

app = FastAPI(title="backend-python example")
jwks = jwt.PyJWKClient(CLERK_JWKS_URL, cache_keys=True)
reeltime = httpx.AsyncClient(
    base_url=REELTIME_URL,
    headers={"Authorization": f"Bearer {SERVER_KEY}"},
    timeout=10.0,
)
# render id -> {"user_id", "import_id", "state"}; a real app keeps this in its database.
renders: dict[str, dict] = {}
# Running worker tasks (kept referenced so they are not collected).
workers: set[asyncio.Task] = set()
# Webhook ids already handled: deliveries are at least once, so a retry
# of an event the app has handled must not act twice.
seen_webhooks: set[str] = set()
# Reeltime's webhook events per render id, in the order received.
render_events: dict[str, list[dict]] = {}


def current_user(authorization: str = Header(default="")) -> str:
    """The Clerk user of the request: the same checks Reeltime makes."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token")
    if token.startswith("rt_sk_"):
        raise HTTPException(401, "a server key is not a user's token")
    try:
        key = jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            issuer=CLERK_ISSUER,
            leeway=5,
            options={"require": ["exp", "sub", "iss"]},
        )
    except jwt.PyJWTError as err:
        raise HTTPException(401, f"invalid token: {err}") from err
    return claims["sub"]


class NewRender(BaseModel):
    title: str = "render"
    steps: int = 5


@app.get("/healthz")
async def healthz() -> dict:
    return {"ok": True}


@app.post("/renders", status_code=201)
async def create_render(body: NewRender, user_id: str = Depends(current_user)) -> dict:
    """Starts a render for the caller and its external import in Reeltime."""
    if not 1 <= body.steps <= 1000:
        raise HTTPException(400, "steps must be 1 to 1000")
    render_id = str(uuid.uuid4())
    response = await reeltime.post(
        "/api/server/imports",
        headers={"Idempotency-Key": f"render-{render_id}"},
        json={
            "user_id": user_id,
            "source": "external",
            "title": body.title,
            "metadata": {"render_id": render_id},
        },
    )
    if response.status_code != 201:
        raise HTTPException(502, f"reeltime refused the import: {response.text}")
    created = response.json()
    renders[render_id] = {"user_id": user_id, "import_id": created["id"], "state": "running"}
    task = asyncio.create_task(work(render_id, created["id"], body.steps))
    workers.add(task)
    task.add_done_callback(workers.discard)
    return {"render_id": render_id, "import": created}


@app.get("/renders/{render_id}")
async def get_render(render_id: str, user_id: str = Depends(current_user)) -> dict:
    render = renders.get(render_id)
    if render is None or render["user_id"] != user_id:
        raise HTTPException(404, "no such render")
    return {"render_id": render_id, **render, "events": render_events.get(render_id, [])}


@app.post("/webhooks/reeltime", status_code=204)
async def reeltime_webhook(request: Request) -> Response:
    """Reeltime's webhooks: verified on the raw body before anything is read."""
    if WEBHOOK_SECRET is None:
        raise HTTPException(404, "webhooks are not set up")
    body = await request.body()
    try:
        event = Webhook(WEBHOOK_SECRET).verify(body, dict(request.headers))
    except WebhookVerificationError as err:
        raise HTTPException(400, f"bad webhook: {err}") from err
    webhook_id = request.headers["webhook-id"]
    if webhook_id in seen_webhooks:
        return Response(status_code=204)
    seen_webhooks.add(webhook_id)
    data = event["data"]
    render_id = (data.get("metadata") or {}).get("render_id")
    if render_id is not None:
        render_events.setdefault(render_id, []).append(
            {"type": event["type"], "status": data.get("status"), "version": data.get("version")}
        )
    return Response(status_code=204)


async def report(import_id: str, what: str, body: dict) -> httpx.Response:
    return await reeltime.post(f"/api/server/imports/{import_id}/{what}", json=body)


async def work(render_id: str, import_id: str, steps: int) -> None:
    """The app's own worker: does the job and reports it step by step."""
    render = renders[render_id]
    try:
        for step in range(1, steps + 1):
            await asyncio.sleep(STEP_SECONDS)  # the work itself
            answer = await report(
                import_id,
                "progress",
                {"progress": step / (steps + 1), "stage": f"rendering part {step} of {steps}"},
            )
            if answer.status_code == 409:
                code = answer.json()["error"]["code"]
                render["state"] = "cancelled" if code == "import_cancelled" else f"stopped: {code}"
                return
            answer.raise_for_status()
        done = await report(import_id, "complete", {"result": {"render_id": render_id, "parts": steps}})
        done.raise_for_status()
        render["state"] = "completed"
    except Exception as err:  # the worker's own failure is reported too
        render["state"] = f"failed: {err}"
        await report(import_id, "fail", {"error": {"code": "render_failed", "message": str(err)[:900]}})
