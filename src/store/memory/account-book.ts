import { LEDGER_TRIM_PER_WRITE, addUsage, matchesLedgerQuery, usageCell } from '../spend-rules.js';
import type { LedgerEntry, LedgerPage, LedgerQuery, SpendSettlement, UsageRange, UsageRow } from '../types.js';

/** Trimmed slots at the front of `entries` tolerated before the array is compacted. */
const COMPACT_AFTER = 1024;

/**
 * One account's ledger in memory and what is indexed beside it: the reference index (kept beyond
 * retention), the request and upstream id indexes, the usage aggregates by day, and the ids of the
 * account's live holds. Not atomic by itself: `MemoryKeyStore` calls it inside one synchronous
 * operation. Entries are the book's own objects; callers copy what they hand out.
 */
export class AccountBook {
  /** Entries in id order (ids only grow, so appending keeps it); those before `start` are trimmed. */
  private entries: LedgerEntry[] = [];
  private start = 0;
  /** Reference → the first entry written with it; never trimmed, so a repeated top-up pays once for good. */
  readonly references = new Map<string, LedgerEntry>();
  private readonly byRequestId = new Map<string, LedgerEntry>();
  private readonly byUpstreamId = new Map<string, LedgerEntry>();
  /** UTC day → `keyId model` → aggregate row: a range reads its days only. */
  private readonly usage = new Map<string, Map<string, UsageRow>>();
  /** Ids of this account's holds not yet settled or released. */
  readonly holds = new Set<string>();

  /**
   * Appends `entry` (its id larger than every entry's before), indexes it, then trims at most
   * {@link LEDGER_TRIM_PER_WRITE} of the oldest entries written before `cutoff`.
   */
  append(entry: LedgerEntry, cutoff: number): void {
    this.entries.push(entry);
    indexFirst(this.references, entry.reference, entry);
    indexFirst(this.byRequestId, entry.requestId, entry);
    indexFirst(this.byUpstreamId, entry.upstreamId, entry);
    this.trim(cutoff, LEDGER_TRIM_PER_WRITE);
  }

  /**
   * Removes up to `max` of the oldest entries while their `createdAt < before`, stopping at the first
   * newer one (kept entries stay one unbroken run, so they still replay to the balance). Trimmed
   * usage entries leave the request and upstream id indexes; the reference index keeps its entries.
   */
  trim(before: number, max: number): number {
    let trimmed = 0;
    while (trimmed < max && this.start < this.entries.length) {
      const oldest = this.entries[this.start] as LedgerEntry;
      if (!(oldest.createdAt < before)) break;
      unindex(this.byRequestId, oldest.requestId, oldest);
      unindex(this.byUpstreamId, oldest.upstreamId, oldest);
      this.start += 1;
      trimmed += 1;
    }
    if (this.start > COMPACT_AFTER && this.start * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.start);
      this.start = 0;
    }
    return trimmed;
  }

  /** Array slots the book holds, trimmed ones not yet compacted away included: the memory compaction bounds. */
  get slots(): number {
    return this.entries.length;
  }

  /**
   * A page of the ledger, newest first (see `KeyStore.listLedger`): a binary search finds `before`,
   * then entries are read downwards, skipping those the filters do not match.
   */
  page(query: LedgerQuery): LedgerPage {
    const found: LedgerEntry[] = [];
    const end = query.before === undefined ? this.entries.length : this.firstAtOrAfter(query.before);
    for (let index = end - 1; index >= this.start; index--) {
      const entry = this.entries[index] as LedgerEntry;
      if (!matchesLedgerQuery(entry, query)) continue;
      // One matching entry beyond a full page is all `hasMore` needs.
      if (found.length === query.limit) return { entries: found, hasMore: true };
      found.push({ ...entry });
    }
    return { entries: found, hasMore: false };
  }

  /** The usage entry whose request id (first) or upstream id is `id`, or undefined. */
  findUsage(id: string): LedgerEntry | undefined {
    return this.byRequestId.get(id) ?? this.byUpstreamId.get(id);
  }

  /** The entry a settlement with this request id wrote before, if it is still kept. */
  settledRequest(requestId: string): LedgerEntry | undefined {
    return this.byRequestId.get(requestId);
  }

  /** Counts a settlement in its (day, key, model) aggregate. */
  count(settlement: SpendSettlement): void {
    const cell = usageCell(settlement);
    let day = this.usage.get(cell.date);
    if (day === undefined) {
      day = new Map();
      this.usage.set(cell.date, day);
    }
    const name = `${cell.keyId} ${cell.model}`;
    day.set(name, addUsage(day.get(name), cell, settlement));
  }

  /** Copies of the aggregate rows with `from <= date <= to`: one look per day that has usage. */
  usageRows(range: UsageRange): UsageRow[] {
    const rows: UsageRow[] = [];
    for (const [date, day] of this.usage) {
      if (date < range.from || date > range.to) continue;
      for (const row of day.values()) rows.push({ ...row });
    }
    return rows;
  }

  /** Index of the first kept entry with an id ≥ `id` (binary search; entries are in id order). */
  private firstAtOrAfter(id: number): number {
    let low = this.start;
    let high = this.entries.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if ((this.entries[mid] as LedgerEntry).id < id) low = mid + 1;
      else high = mid;
    }
    return low;
  }
}

/** Indexes `entry` under `id` unless `id` is `null` or already taken: the first entry written with an id keeps it. */
function indexFirst(index: Map<string, LedgerEntry>, id: string | null, entry: LedgerEntry): void {
  if (id !== null && !index.has(id)) index.set(id, entry);
}

/**
 * Drops `id` from `index` when it still points at `entry` (a newer entry written with the same id
 * keeps it). No `null` test: `indexFirst` never indexes `null`, so `get(null)` is never `entry`.
 */
function unindex(index: Map<string | null, LedgerEntry>, id: string | null, entry: LedgerEntry): void {
  if (index.get(id) === entry) index.delete(id);
}
