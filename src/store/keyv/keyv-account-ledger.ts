import { LEDGER_TRIM_PER_WRITE, addUsage, matchesLedgerQuery, usageCell } from '../spend-rules.js';
import type { LedgerEntry, LedgerPage, LedgerQuery, SpendSettlement, UsageRange, UsageRow } from '../types.js';

/**
 * Entries per ledger chunk: a write rewrites the last chunk, so it stays small (a few dozen KB of
 * JSON), while an account of a million entries still needs only 10,000 chunks, found by binary search.
 */
const LEDGER_CHUNK_SIZE = 100;

/** Reads and writes of Keyv entries by their name below the store's prefix (copies, when the adapter keeps objects). */
export interface KeyvEntries {
  get<T>(name: string): Promise<T | undefined>;
  set(name: string, value: unknown): Promise<void>;
  delete(name: string): Promise<void>;
}

/** Which chunks hold the account's kept entries: numbers `first..last` (none when `first > last`). */
interface LedgerMeta {
  first: number;
  last: number;
}

/**
 * A Keyv entry name of two parts, the first of any characters: its length goes first, so no account
 * id can make one account's name equal another's (`x` + `1:y` vs `x:1` + `y`).
 */
export function entryName(kind: string, accountId: string, part: string | number): string {
  return `${kind}:${accountId.length}:${accountId}:${part}`;
}

/**
 * One account's ledger in Keyv entries, for adapters without sorted sets: entries in chunks of
 * {@link LEDGER_CHUNK_SIZE} in id order (a meta entry names the first and last chunk), the
 * reference index (an entry per reference, never trimmed), the request and upstream id indexes (an
 * entry per id, removed with their entry), and the usage aggregates (an entry per UTC day, with a
 * list of days per year and a list of years, so a range reads only days that have usage). No entry
 * grows without bound. Not atomic: the caller holds the store's lock.
 */
export class KeyvAccountLedger {
  constructor(
    private readonly entries: KeyvEntries,
    private readonly accountId: string,
  ) {}

  /** The first entry written with `reference`, kept beyond retention. */
  reference(reference: string): Promise<LedgerEntry | undefined> {
    return this.entries.get<LedgerEntry>(entryName('ledger-ref', this.accountId, reference));
  }

  /** The usage entry whose request id is `requestId`, while it is kept. */
  settledRequest(requestId: string): Promise<LedgerEntry | undefined> {
    return this.entries.get<LedgerEntry>(entryName('ledger-request', this.accountId, requestId));
  }

  /** The usage entry whose request id (first) or upstream id is `id`, while it is kept. */
  async findUsage(id: string): Promise<LedgerEntry | undefined> {
    return (await this.settledRequest(id)) ?? this.entries.get<LedgerEntry>(entryName('ledger-upstream', this.accountId, id));
  }

  /**
   * Appends `entry` (its id larger than every entry's before) and indexes it; then trims at most
   * {@link LEDGER_TRIM_PER_WRITE} of the oldest entries written before `cutoff`. Answers whether the
   * account had no ledger meta before (the caller lists it for `trimLedger`).
   */
  async append(entry: LedgerEntry, cutoff: number): Promise<boolean> {
    const stored = await this.meta();
    const meta = stored ?? { first: 0, last: -1 };
    const chunk = meta.first <= meta.last ? await this.chunk(meta.last) : [];
    if (meta.first <= meta.last && chunk.length < LEDGER_CHUNK_SIZE) {
      chunk.push(entry);
      await this.entries.set(this.chunkName(meta.last), chunk);
    } else {
      meta.last += 1;
      if (meta.first > meta.last) meta.first = meta.last;
      await this.entries.set(this.chunkName(meta.last), [entry]);
    }
    await this.entries.set(this.metaName(), meta);
    if (entry.reference !== null && (await this.reference(entry.reference)) === undefined) {
      await this.entries.set(entryName('ledger-ref', this.accountId, entry.reference), entry);
    }
    if (entry.requestId !== null && (await this.settledRequest(entry.requestId)) === undefined) {
      await this.entries.set(entryName('ledger-request', this.accountId, entry.requestId), entry);
    }
    const upstream = entryName('ledger-upstream', this.accountId, entry.upstreamId ?? '');
    if (entry.upstreamId !== null && (await this.entries.get(upstream)) === undefined) await this.entries.set(upstream, entry);
    await this.trim(cutoff, LEDGER_TRIM_PER_WRITE);
    return stored === undefined;
  }

  /**
   * Removes up to `max` of the oldest entries while their `createdAt < before`, stopping at the
   * first newer one (kept entries stay one unbroken run). Trimmed usage entries leave the request and
   * upstream id indexes; references stay. Answers how many it removed.
   */
  async trim(before: number, max: number): Promise<number> {
    const meta = await this.meta();
    if (meta === undefined) return 0;
    let trimmed = 0;
    while (trimmed < max && meta.first <= meta.last) {
      const chunk = await this.chunk(meta.first);
      let cut = 0;
      while (cut < chunk.length && trimmed < max && (chunk[cut] as LedgerEntry).createdAt < before) {
        await this.unindex(chunk[cut] as LedgerEntry);
        cut += 1;
        trimmed += 1;
      }
      if (cut === 0) break;
      if (cut < chunk.length) {
        await this.entries.set(this.chunkName(meta.first), chunk.slice(cut));
        break;
      }
      await this.entries.delete(this.chunkName(meta.first));
      meta.first += 1;
    }
    if (trimmed > 0) await this.entries.set(this.metaName(), meta);
    return trimmed;
  }

  /**
   * A page newest first (see `KeyStore.listLedger`): a binary search over the chunks finds the one
   * holding the newest entry below `before`, then chunks are read downwards, skipping entries the
   * filters do not match (a filter may read many of the account's chunks).
   */
  async page(query: LedgerQuery): Promise<LedgerPage> {
    const meta = await this.meta();
    const found: LedgerEntry[] = [];
    if (meta !== undefined && meta.first <= meta.last) {
      const before = query.before ?? Number.POSITIVE_INFINITY;
      for (let n = await this.lastChunkBelow(meta, before); n >= meta.first && found.length <= query.limit; n--) {
        const chunk = await this.chunk(n);
        for (let i = chunk.length - 1; i >= 0 && found.length <= query.limit; i--) {
          const entry = chunk[i] as LedgerEntry;
          if (entry.id < before && matchesLedgerQuery(entry, query)) found.push(entry);
        }
      }
    }
    return { entries: found.slice(0, query.limit), hasMore: found.length > query.limit };
  }

  /** Counts a settlement in its (day, key, model) aggregate, listing the day (and year) the first time. */
  async count(settlement: SpendSettlement): Promise<void> {
    const cell = usageCell(settlement);
    const dayName = entryName('usage-day', this.accountId, cell.date);
    const rows = (await this.entries.get<UsageRow[]>(dayName)) ?? [];
    const index = rows.findIndex((row) => row.keyId === cell.keyId && row.model === cell.model);
    if (index === -1) rows.push(addUsage(undefined, cell, settlement));
    else rows[index] = addUsage(rows[index], cell, settlement);
    if (rows.length === 1 && index === -1) await this.listDay(cell.date);
    await this.entries.set(dayName, rows);
  }

  /** The aggregate rows with `from <= date <= to`: reads the years, their days in range, and those days. */
  async usageRows(range: UsageRange): Promise<UsageRow[]> {
    const rows: UsageRow[] = [];
    const years = (await this.entries.get<string[]>(entryName('usage-years', this.accountId, ''))) ?? [];
    for (const year of years) {
      if (year < range.from.slice(0, 4) || year > range.to.slice(0, 4)) continue;
      const days = (await this.entries.get<string[]>(entryName('usage-days', this.accountId, year))) ?? [];
      for (const day of days) {
        if (day < range.from || day > range.to) continue;
        rows.push(...((await this.entries.get<UsageRow[]>(entryName('usage-day', this.accountId, day))) ?? []));
      }
    }
    return rows;
  }

  private async listDay(date: string): Promise<void> {
    const year = date.slice(0, 4);
    const daysName = entryName('usage-days', this.accountId, year);
    const days = (await this.entries.get<string[]>(daysName)) ?? [];
    if (days.length === 0) {
      const yearsName = entryName('usage-years', this.accountId, '');
      const years = (await this.entries.get<string[]>(yearsName)) ?? [];
      await this.entries.set(yearsName, [...years, year]);
    }
    await this.entries.set(daysName, [...days, date]);
  }

  /** Drops a trimmed entry from the request and upstream id indexes (when they name it). */
  private async unindex(entry: LedgerEntry): Promise<void> {
    for (const [kind, id] of [
      ['ledger-request', entry.requestId],
      ['ledger-upstream', entry.upstreamId],
    ] as const) {
      if (id === null) continue;
      const name = entryName(kind, this.accountId, id);
      if ((await this.entries.get<LedgerEntry>(name))?.id === entry.id) await this.entries.delete(name);
    }
  }

  /** The largest chunk number whose first entry's id is below `before` (or `first - 1`: none). */
  private async lastChunkBelow(meta: LedgerMeta, before: number): Promise<number> {
    let low = meta.first;
    let high = meta.last;
    let found = meta.first - 1;
    while (low <= high) {
      const mid = (low + high) >>> 1;
      const firstId = (await this.chunk(mid))[0]?.id ?? Number.POSITIVE_INFINITY;
      if (firstId < before) {
        found = mid;
        low = mid + 1;
      } else {
        high = mid - 1;
      }
    }
    return found;
  }

  private meta(): Promise<LedgerMeta | undefined> {
    return this.entries.get<LedgerMeta>(this.metaName());
  }

  private async chunk(n: number): Promise<LedgerEntry[]> {
    return (await this.entries.get<LedgerEntry[]>(this.chunkName(n))) ?? [];
  }

  private metaName(): string {
    return entryName('ledger', this.accountId, 'meta');
  }

  private chunkName(n: number): string {
    return entryName('ledger', this.accountId, n);
  }
}
