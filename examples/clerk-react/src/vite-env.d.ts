/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** Your Clerk application's publishable key (pk_test_… or pk_live_…). */
  readonly VITE_CLERK_PUBLISHABLE_KEY?: string;
  /** The Reeltime server, when not behind this app's own origin (see README). */
  readonly VITE_REELTIME_URL?: string;
}
