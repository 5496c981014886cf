import type { LedgerEntry } from '../store/types.js';
import { isoTime } from './public-key.js';

/**
 * A ledger entry as `GET /api/transactions` and `GET /v1/generation` show it: the account, the
 * upstream's answer id and the note stay in the store.
 */
export interface PublicLedgerEntry extends Omit<LedgerEntry, 'accountId' | 'upstreamId' | 'note' | 'createdAt'> {
  /** ISO 8601, UTC. */
  createdAt: string;
}

/**
 * The public view of a ledger entry.
 *
 * @example
 * ```ts
 * const page = await store.listLedger(accountId, { limit: 10 });
 * page.entries.map(publicLedgerEntry); // [{ id: 3, type: 'usage', amount: -0.028, balanceAfter: 9.972, keyId: 2, … }]
 * ```
 */
export function publicLedgerEntry(entry: LedgerEntry): PublicLedgerEntry {
  return {
    id: entry.id,
    type: entry.type,
    amount: entry.amount,
    balanceAfter: entry.balanceAfter,
    keyId: entry.keyId,
    model: entry.model,
    promptTokens: entry.promptTokens,
    completionTokens: entry.completionTokens,
    requestId: entry.requestId,
    reference: entry.reference,
    createdAt: isoTime(entry.createdAt),
  };
}
