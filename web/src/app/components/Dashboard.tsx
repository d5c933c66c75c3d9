import type { GetToken } from '@reeltime/client';
import { useProgressClient } from '@reeltime/react';
import type { AppConfig } from '../api';
import { AuthErrorBanner } from './AuthErrorBanner';
import { ConnectionBadge } from './ConnectionBadge';
import { ImportForm } from './ImportForm';
import { ImportList } from './ImportList';

/**
 * The signed-in page. Rendered inside `<WebSocketProvider>`, like any
 * Clerk app would do. Signing out closes the socket with 1000 first: the
 * imports keep running on the server, and signing in again shows them.
 */
export function Dashboard(props: {
  userName: string;
  getToken: GetToken;
  config: AppConfig;
  onSignOut: () => void;
}) {
  const client = useProgressClient();
  const signOut = () => {
    client.close();
    props.onSignOut();
  };
  return (
    <>
      <header className="topbar">
        <span className="brand">Reeltime</span>
        <ConnectionBadge />
        <span className="spacer" />
        <span className="user" data-testid="user-name">
          {props.userName}
        </span>
        <button type="button" className="button button-quiet" onClick={signOut} data-testid="signout">
          Sign out
        </button>
      </header>
      <main className="page">
        <AuthErrorBanner onSignOut={signOut} />
        {!props.config.media_processing && (
          <p className="note">
            Media processing is off on this server: imports are downloaded and checked, but no poster or player is made.
          </p>
        )}
        <ImportForm getToken={props.getToken} samples={props.config.samples} />
        <ImportList getToken={props.getToken} />
      </main>
    </>
  );
}
