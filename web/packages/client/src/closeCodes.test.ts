import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { actionForClose, CLOSE_CODES, CloseCode, CloseReason } from './closeCodes.js';

/** The protocol crate's table, exported by it (see `crates/protocol/src/close.rs`). */
const PROTOCOL_TABLE: unknown = JSON.parse(
  readFileSync(fileURLToPath(new URL('../../../../crates/protocol/close-codes.json', import.meta.url)), 'utf8'),
);

describe('close codes', () => {
  it('are exactly the protocol crate’s table: codes, names, senders, actions and reasons', () => {
    expect(CLOSE_CODES).toEqual(PROTOCOL_TABLE);
  });

  it('are named and acted on as the table says', () => {
    expect(CloseCode.POLICY_VIOLATION).toBe(1008);
    expect(CloseCode.TOKEN_EXPIRED).toBe(4001);
    expect(CloseReason.CLIENT_CLOSED).toBe('client closed');
    expect(Object.keys(CloseCode)).toHaveLength(CLOSE_CODES.length);
    for (const row of CLOSE_CODES) expect(actionForClose(row.code)).toBe(row.action);
    expect(actionForClose(4999)).toBe('backoff');
  });
});
