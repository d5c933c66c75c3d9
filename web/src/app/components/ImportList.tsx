import type { GetToken } from '@reeltime/client';
import { useImports } from '@reeltime/react';
import { ImportRow } from './ImportRow';

/** The live list, newest first, straight from the client's store. */
export function ImportList({ getToken }: { getToken: GetToken }) {
  const imports = useImports();
  return (
    <section className="card" aria-labelledby="imports">
      <h2 id="imports">Your imports</h2>
      {imports.length === 0 ? (
        <p className="muted empty" data-testid="imports-empty">
          No imports yet. Paste a video URL above, or try a sample.
        </p>
      ) : (
        <ul className="imports">
          {imports.map((item) => (
            <ImportRow key={item.id} item={item} getToken={getToken} />
          ))}
        </ul>
      )}
    </section>
  );
}
