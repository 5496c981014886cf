import type { IncomingMessage, ServerResponse } from 'node:http';
import { DEFAULT_KEY_TYPE } from '../defaults.js';
import { ModelSwitchError, invalidRequest } from '../errors/errors.js';
import { isJsonObject, readJsonBody } from '../http/body.js';
import { sendJson } from '../http/respond.js';
import { prepareKey, prepareRotation } from '../keys/accounts.js';
import { isoTime, publicKey } from '../keys/public-key.js';
import { publicLedgerEntry } from '../keys/public-ledger-entry.js';
import { accountAnswer, transactionsAnswer, usageAnswer } from '../management/account-routes.js';
import { type EventDispatcher, type KeyChange, dashboardActor } from '../events/events.js';
import type { StoreGuard } from '../store/guard.js';
import { MAX_LEDGER_PAGE } from '../store/spend-rules.js';
import type { KeyRecord, KeyStore, KeyType, LedgerEntry, LedgerEntryType } from '../store/types.js';
import { gracePeriodFromBody, keyChangesFromBody, keySettingsFromBody, validateId } from '../management/validation.js';
import type { ResolvedDashboardOptions } from './options.js';

/** Who the request is from: the account it may see and change. */
export interface Caller {
  accountId: string;
  /** Shown in the page header: a billing key's name and prefix, or the host's user. */
  subject: string;
  /** The billing key the session is bound to (`null` for the host's own login). */
  keyId: number | null;
}

const CREATE_FIELDS = new Set(['type', 'name', 'expires_at', 'limit', 'limit_reset', 'rate_limit', 'models']);
const UPDATE_FIELDS = new Set(['name', 'active', 'expires_at', 'limit', 'limit_reset', 'rate_limit', 'models']);
/** The CSV export pages through at most this many entries (the ledger's retention bounds it anyway). */
const MAX_CSV_ENTRIES = 100_000;
const LEDGER_TYPES = new Set<LedgerEntryType>(['usage', 'credit', 'adjustment']);

/** The dashboard's JSON API over the store, scoped to the caller's account. */
export class DashboardApi {
  constructor(
    private readonly store: KeyStore,
    private readonly guard: StoreGuard,
    private readonly options: ResolvedDashboardOptions,
    private readonly events: EventDispatcher,
  ) {}

  /** Reports a change of key `keyId` made in the caller's session, once its answer is sent. */
  private keyEvent(caller: Caller, res: ServerResponse, keyId: number, at: number, event: KeyChange): void {
    if (!this.events.enabled) return;
    this.events.afterResponse(res, { ...event, accountId: caller.accountId, keyId, ...dashboardActor(caller), time: at });
  }

  /** The key with this id if it belongs to the caller's account; 404 otherwise (never 403). */
  private async ownKey(caller: Caller, rawId: string): Promise<KeyRecord> {
    const id = validateId(rawId);
    const record = await this.guard.run('getKey', () => this.store.getKey(id));
    if (!record || record.accountId !== caller.accountId)
      throw new ModelSwitchError('key_not_found', `No API key with id ${id}`, { param: 'id' });
    return record;
  }

  async listKeys(caller: Caller, query: URLSearchParams, res: ServerResponse): Promise<void> {
    const type = keyType(query.get('type') ?? DEFAULT_KEY_TYPE);
    const keys: KeyRecord[] = [];
    let after: number | undefined;
    // A person's keys fit a page or a few; the dashboard shows them all.
    for (let page = 0; page < 10; page++) {
      const listed = await this.guard.run('listKeys', () =>
        this.store.listKeys(caller.accountId, { type, limit: 1000, ...(after === undefined ? {} : { after }) }),
      );
      keys.push(...listed.keys);
      if (!listed.hasMore || listed.keys.length === 0) break;
      after = listed.keys[listed.keys.length - 1]?.id;
    }
    const now = this.options.now();
    sendJson(res, 200, { keys: keys.map((key) => dashboardKey(key, now)), signedInKeyId: caller.keyId });
  }

  async createKey(caller: Caller, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await this.objectBody(req, res, CREATE_FIELDS);
    const type = keyType(body.type ?? DEFAULT_KEY_TYPE, 'type');
    if (body.name === undefined) throw invalidRequest('name is required', 'name');
    const now = this.options.now();
    refuseModelsOnBilling(type, body);
    const input = { accountId: caller.accountId, type, ...keySettingsFromBody(body, now) };
    const prepared = await prepareKey(input, { hasher: this.options.hasher, now, boundedPerAccount: true });
    const record = await this.guard.run('insertKey', () => this.store.insertKey(prepared.record));
    const { id, ...fields } = dashboardKey(record, now);
    sendJson(res, 201, { id, key: prepared.key, ...fields });
    this.keyEvent(caller, res, record.id, now, { type: 'key.created' });
  }

  async updateKey(caller: Caller, rawId: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const current = await this.ownKey(caller, rawId);
    const body = await this.objectBody(req, res, UPDATE_FIELDS);
    const now = this.options.now();
    refuseModelsOnBilling(current.type, body);
    const changes = keyChangesFromBody(body, now);
    const updated = await this.guard.run('updateKey', () => this.store.updateKey(current.id, changes));
    if (!updated) throw new ModelSwitchError('key_not_found', `No API key with id ${current.id}`, { param: 'id' });
    sendJson(res, 200, dashboardKey(updated, now));
    this.keyEvent(caller, res, updated.id, now, { type: 'key.updated', changed: Object.keys(body) });
  }

  async deleteKey(caller: Caller, rawId: string, res: ServerResponse): Promise<void> {
    const record = await this.ownKey(caller, rawId);
    const deleted = await this.guard.run('deleteKey', () => this.store.deleteKey(record.id));
    if (!deleted) throw new ModelSwitchError('key_not_found', `No API key with id ${record.id}`, { param: 'id' });
    sendJson(res, 200, { id: record.id, deleted: true });
    this.keyEvent(caller, res, record.id, this.options.now(), { type: 'key.deleted' });
  }

  /**
   * A new secret for the same key, as `POST /api/keys/:id/rotate` does: the same `grace_period`
   * reading (so the same 400s), and the new secret's hash bounded per account as a creation's is.
   */
  async rotateKey(caller: Caller, rawId: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const record = await this.ownKey(caller, rawId);
    const body = await this.objectBody(req, res, new Set(['grace_period']));
    const gracePeriodMs = gracePeriodFromBody(body);
    const now = this.options.now();
    // Bounded per account like a creation: one account rotating in a loop neither fills the scrypt
    // queue nor delays another account's requests (see KeyHasher).
    const prepared = await prepareRotation(record, { hasher: this.options.hasher, now, gracePeriodMs, boundedPerAccount: true });
    const rotated = await this.guard.run('rotateKey', () => this.store.rotateKey(prepared.rotation));
    if (!rotated) throw new ModelSwitchError('key_not_found', `No API key with id ${record.id}`, { param: 'id' });
    const { id, ...fields } = dashboardKey(rotated, now);
    sendJson(res, 200, { id, key: prepared.key, ...fields });
    this.keyEvent(caller, res, rotated.id, now, { type: 'key.rotated', previousKeyExpiresAt: rotated.previousKeyExpiresAt });
  }

  async account(caller: Caller, res: ServerResponse): Promise<void> {
    const account = await this.guard.run('getAccount', () => this.store.getAccount(caller.accountId));
    if (!account) throw new ModelSwitchError('key_not_found', 'The account no longer exists');
    sendJson(res, 200, accountAnswer(account));
  }

  /** `GET /api/transactions`, for the session's account. */
  async transactions(caller: Caller, query: URLSearchParams, res: ServerResponse): Promise<void> {
    sendJson(res, 200, await transactionsAnswer(this.store, this.guard, caller.accountId, query));
  }

  /** The whole ledger (within retention) as CSV, newest first. */
  async transactionsCsv(caller: Caller, query: URLSearchParams, res: ServerResponse): Promise<void> {
    const filters = ledgerFilters(query, ['type', 'key_id']);
    const lines = ['id,created_at,type,amount,balance_after,key_id,model,prompt_tokens,completion_tokens,request_id,reference'];
    let before: number | undefined;
    for (let count = 0; count < MAX_CSV_ENTRIES; ) {
      const page = await this.guard.run('listLedger', () =>
        this.store.listLedger(caller.accountId, { limit: MAX_LEDGER_PAGE, ...filters, ...(before === undefined ? {} : { before }) }),
      );
      for (const entry of page.entries) lines.push(csvLine(entry));
      count += page.entries.length;
      if (!page.hasMore || page.entries.length === 0) break;
      before = page.entries[page.entries.length - 1]?.id;
    }
    const body = `${lines.join('\r\n')}\r\n`;
    res.statusCode = 200;
    res.setHeader('Content-Type', 'text/csv; charset=utf-8');
    res.setHeader('Content-Disposition', `attachment; filename="transactions-${caller.accountId.replace(/[^A-Za-z0-9_-]/g, '_')}.csv"`);
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
  }

  /** `GET /api/usage` (`from`, `to`, `group_by`), for the session's account: the same totals. */
  async usage(caller: Caller, query: URLSearchParams, res: ServerResponse): Promise<void> {
    sendJson(res, 200, await usageAnswer(this.store, this.guard, this.options.now(), caller.accountId, query));
  }

  private async objectBody(req: IncomingMessage, res: ServerResponse, allowed: ReadonlySet<string>): Promise<Record<string, unknown>> {
    const { value } = await readJsonBody(req, res, this.options.maxBodyBytes);
    if (value === undefined && allowed.has('grace_period')) return {};
    if (!isJsonObject(value)) throw invalidRequest('Request body must be a JSON object');
    for (const name of Object.keys(value)) if (!allowed.has(name)) throw invalidRequest(`Unknown field ${name}`, name);
    return value;
  }
}

/** A model list is a proxy key's: setting one on a billing key (other than `null`, none) is refused. */
function refuseModelsOnBilling(type: KeyType, body: Record<string, unknown>): void {
  if (type === 'billing' && body.models !== undefined && body.models !== null)
    throw invalidRequest('models applies to proxy keys only', 'models');
}

/** A key as the dashboard shows it: the management API's fields plus its type, models and rotation deadline. */
export function dashboardKey(record: KeyRecord, now: number) {
  return {
    ...publicKey(record, now),
    type: record.type,
    models: record.models === null ? null : [...record.models],
    previousKeyExpiresAt:
      record.previousKeyExpiresAt === null || record.previousKeyExpiresAt <= now ? null : isoTime(record.previousKeyExpiresAt),
  };
}

function keyType(value: unknown, param = 'type'): KeyType {
  if (value === 'proxy' || value === 'billing') return value;
  throw invalidRequest(`${param} must be "proxy" or "billing"`, param);
}

function ledgerFilters(query: URLSearchParams, allowed: readonly string[]): { type?: LedgerEntryType; keyId?: number } {
  for (const [name] of query) if (!allowed.includes(name)) throw invalidRequest(`Unknown query parameter ${name}`, name);
  const filters: { type?: LedgerEntryType; keyId?: number } = {};
  const type = query.get('type');
  if (type !== null && type !== '') {
    if (!LEDGER_TYPES.has(type as LedgerEntryType)) throw invalidRequest('type must be usage, credit or adjustment', 'type');
    filters.type = type as LedgerEntryType;
  }
  const keyId = query.get('key_id');
  if (keyId !== null && keyId !== '') filters.keyId = validateId(keyId, 'key_id');
  return filters;
}

function csvLine(entry: LedgerEntry): string {
  const t = publicLedgerEntry(entry);
  return [
    t.id,
    t.createdAt,
    t.type,
    t.amount,
    t.balanceAfter,
    t.keyId,
    t.model,
    t.promptTokens,
    t.completionTokens,
    t.requestId,
    t.reference,
  ]
    .map(csvField)
    .join(',');
}

/** A CSV field (RFC 4180), with a leading `=`, `+`, `-`, `@` neutralised so a spreadsheet never runs it as a formula. */
function csvField(value: string | number | null): string {
  if (value === null) return '';
  if (typeof value === 'number') return String(value);
  const text = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}
