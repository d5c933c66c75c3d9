import { ProgressClient, type GetToken, type Import } from '@reeltime/client';

/** Just the part of Clerk's browser SDK (`window.Clerk`) this page uses. */
interface ClerkLike {
  load?: () => Promise<void>;
  session?: { getToken(options?: { skipCache?: boolean }): Promise<string | null> } | null;
}

declare global {
  interface Window {
    Clerk?: ClerkLike;
  }
}

/**
 * Tokens from Clerk when its script is on the page; otherwise from the
 * Reeltime server's development issuer (on when no Clerk key is set), as user
 * `demo`, so the page also runs against a local server with no Clerk app.
 */
const getToken: GetToken = async (options) => {
  if (window.Clerk) {
    await window.Clerk.load?.();
    return window.Clerk.session ? window.Clerk.session.getToken(options) : null;
  }
  const response = await fetch('/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ sub: 'demo', ttl_secs: 300 }),
  });
  return response.ok ? ((await response.json()) as { token: string }).token : null;
};

const socketUrl = `${window.location.origin.replace(/^http/, 'ws')}/api/ws/progress`;
const client = new ProgressClient({ url: socketUrl, getToken });

const status = document.querySelector<HTMLElement>('#status')!;
const list = document.querySelector<HTMLUListElement>('#imports')!;

/** One row: title, status and a bar; rebuilt on every change (a real page would diff). */
function row(item: Import): HTMLLIElement {
  const li = document.createElement('li');
  const bar = document.createElement('progress');
  bar.max = 1;
  if (item.progress !== null) bar.value = item.progress;
  li.append(`${item.title ?? item.file_name ?? item.source_url ?? item.id}: ${item.status} `, bar);
  if (item.error) li.append(` ${item.error.message}`);
  return li;
}

client.subscribe(() => {
  status.textContent = client.getStatus().status;
  list.replaceChildren(...client.getImports().map(row));
});
client.start();
// On sign-out: client.close() (the socket closes with 1000; imports go on on the server).
window.addEventListener('pagehide', () => client.close());
