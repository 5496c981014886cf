import { invalidRequest } from '../errors/errors.js';
import { intervalToMs } from '../auth/rate-limit.js';
import { containsKey } from '../keys/api-key.js';
import { MAX_ALLOWED_MODELS, MAX_MODEL_NAME_LENGTH } from '../keys/models.js';
import { DEFAULT_ROTATION_GRACE_PERIOD_MS, MAX_ROTATION_GRACE_PERIOD_MS } from '../defaults.js';
import type { KeyChanges, LimitReset, RateLimitSetting } from '../store/types.js';

const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2}))?$/;
/** C0, DEL and C1 (U+0080–U+009F): every control character (Unicode category Cc). */
const CONTROL_CHARACTERS = /\p{Cc}/u;
/**
 * What shows nothing: whitespace, format characters (zero-width space, joiners, BOM, bidi marks:
 * category Cf), the other default-ignorable code points (variation selectors, Hangul fillers) and
 * the Braille blank. A name made only of these is blank however long it is.
 */
const INVISIBLE_ONLY = /^[\s\p{Cf}\p{Default_Ignorable_Code_Point}\u2800]*$/u;
/**
 * Bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069): they reorder the
 * text shown after them, so a name holding one could make a listing, a log line or the CLI's table
 * read other than it is ("Trojan Source"). The marks (U+200E, U+200F, U+061C) stay allowed.
 */
const BIDI_CONTROLS = /[\u202A-\u202E\u2066-\u2069]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const ID = /^[1-9][0-9]{0,15}$/;

/**
 * `name`: a string of 1–100 characters (code points), with no control character (C0, DEL, C1), not
 * blank (something visible: not only whitespace, zero-width or other invisible characters), no
 * bidirectional embedding, override or isolate (U+202A–U+202E, U+2066–U+2069), and no
 * ModelSwitch key in it (names are listed and shown; a key pasted into one would be shown too).
 */
export function validateName(value: unknown, param = 'name'): string {
  if (typeof value !== 'string') throw invalidRequest(`${param} must be a string`, param);
  const length = [...value].length;
  if (length < 1 || length > 100) throw invalidRequest(`${param} must be 1 to 100 characters`, param);
  if (CONTROL_CHARACTERS.test(value)) throw invalidRequest(`${param} must not contain control characters`, param);
  // A lone surrogate is not text: stores that speak JSON to another process (Redis' cjson) refuse it.
  if (LONE_SURROGATE.test(value)) throw invalidRequest(`${param} must be valid Unicode text`, param);
  if (INVISIBLE_ONLY.test(value)) throw invalidRequest(`${param} must not be blank`, param);
  if (BIDI_CONTROLS.test(value)) throw invalidRequest(`${param} must not contain bidirectional text controls`, param);
  // A name is shown in listings, so it must not carry a key, also not percent-encoded (`ms%2D…`).
  if (containsKey(value)) throw invalidRequest(`${param} must not contain an API key`, param);
  return value;
}

/**
 * `expires_at`: an ISO 8601 date (`2025-12-31`, midnight UTC) or date-time with a zone
 * (`2025-12-31T00:00:00Z`, `…+02:00`) in the future, or `null` for never.
 */
export function validateExpiresAt(value: unknown, now: number, param = 'expires_at'): number | null {
  if (value === null) return null;
  if (typeof value !== 'string') throw invalidRequest(`${param} must be an ISO 8601 date-time string or null`, param);
  const match = ISO_8601.exec(value);
  // `Date.parse` reads a date without a time as midnight UTC (ECMA-262, Date Time String Format).
  const time = match ? Date.parse(value) : Number.NaN;
  if (!match || Number.isNaN(time) || !isRealDate(Number(match[1]), Number(match[2]), Number(match[3])) || Number(match[4] ?? 0) > 23) {
    throw invalidRequest(`${param} must be an ISO 8601 date-time with a time zone, e.g. 2025-12-31T00:00:00Z`, param);
  }
  if (time <= now) throw invalidRequest(`${param} must be in the future`, param);
  return time;
}

/**
 * Whether the day exists in its month: `Date.parse` refuses a month or day out of 1–12 and 1–31 but
 * reads `2027-02-30` as March 2, and such a day always rolls over to another day of the month.
 * `setUTCFullYear` takes years 0–99 as they are (`Date.UTC` would read 50 as 1950).
 */
function isRealDate(year: number, month: number, day: number): boolean {
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  return date.getUTCDate() === day;
}

/** `limit`: USD ≥ 0 (at most 1e12), or `null` for none. */
export function validateLimit(value: unknown, param = 'limit'): number | null {
  if (value === null) return null;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1e12) {
    throw invalidRequest(`${param} must be a number of USD ≥ 0, or null`, param);
  }
  return value;
}

/** `limit_reset`: `daily`, `weekly`, `monthly` or `null`. */
export function validateLimitReset(value: unknown, param = 'limit_reset'): LimitReset | null {
  if (value === null || value === 'daily' || value === 'weekly' || value === 'monthly') return value;
  throw invalidRequest(`${param} must be "daily", "weekly", "monthly" or null`, param);
}

/** `rate_limit`: `{requests: integer ≥ 1, interval: "<n>s|m|h|d", tokens?: integer ≥ 1}` or `null`. */
export function validateRateLimit(value: unknown, param = 'rate_limit'): RateLimitSetting | null {
  if (value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw invalidRequest(`${param} must be an object {requests, interval, tokens?} or null`, param);
  }
  const fields = value as Record<string, unknown>;
  for (const name of Object.keys(fields)) {
    if (name !== 'requests' && name !== 'interval' && name !== 'tokens') {
      throw invalidRequest(`Unknown field ${param}.${name}`, `${param}.${name}`);
    }
  }
  const { requests, interval, tokens } = fields;
  if (!isCount(requests)) throw invalidRequest(`${param}.requests must be an integer ≥ 1`, `${param}.requests`);
  if (typeof interval !== 'string' || intervalToMs(interval) === null) {
    throw invalidRequest(`${param}.interval must look like "10s", "1m", "1h" or "1d" (at most 366 days)`, `${param}.interval`);
  }
  if (tokens !== undefined && !isCount(tokens)) throw invalidRequest(`${param}.tokens must be an integer ≥ 1`, `${param}.tokens`);
  return tokens === undefined ? { requests, interval } : { requests, interval, tokens };
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1;
}

/**
 * `models`: `null` (every model) or an array of 1–100 model names, each 1–200 characters without
 * control characters or whitespace: an exact name (`gpt-4o-mini`), or a prefix ending in `*`
 * (`claude-*`) where `*` appears only at the end. A lone `*` is refused: `null` says "every model".
 * Kept in the order given; a repeated entry is refused, as it is surely a mistake.
 */
export function validateModels(value: unknown, param = 'models'): string[] | null {
  if (value === null) return null;
  if (!Array.isArray(value) || value.length < 1 || value.length > MAX_ALLOWED_MODELS) {
    throw invalidRequest(`${param} must be null (every model) or an array of 1 to ${MAX_ALLOWED_MODELS} model names`, param);
  }
  const seen = new Set<string>();
  value.forEach((entry: unknown, index) => {
    const where = `${param}[${index}]`;
    if (typeof entry !== 'string' || entry.length < 1 || entry.length > MAX_MODEL_NAME_LENGTH) {
      throw invalidRequest(`${where} must be a model name of 1 to ${MAX_MODEL_NAME_LENGTH} characters`, where);
    }
    if (CONTROL_CHARACTERS.test(entry) || /\s/.test(entry) || LONE_SURROGATE.test(entry)) {
      throw invalidRequest(`${where} must not contain whitespace or control characters`, where);
    }
    if (entry === '*') throw invalidRequest(`${where} cannot be a lone "*": use null to allow every model`, where);
    if (entry.slice(0, -1).includes('*')) {
      throw invalidRequest(`${where} may contain "*" only at its end (a prefix, e.g. "gpt-4o*")`, where);
    }
    if (containsKey(entry)) throw invalidRequest(`${where} must not contain an API key`, where);
    if (seen.has(entry)) throw invalidRequest(`${where} repeats "${entry}"`, where);
    seen.add(entry);
  });
  return [...(value as string[])];
}

const GRACE_PERIOD = /^(0|[1-9][0-9]{0,6})([smhd])$/;
const GRACE_UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * `grace_period` of a rotation, in ms: a duration written like `rate_limit.interval` (`"90s"`,
 * `"15m"`, `"1h"`, `"7d"`, `"0s"`), or a whole number of seconds (`3600`), from 0 to 7 days; `null`
 * is 0 (the previous secret stops at once).
 */
export function validateGracePeriod(value: unknown, param = 'grace_period'): number {
  let ms = Number.NaN;
  if (value === null) ms = 0;
  else if (typeof value === 'number' && Number.isSafeInteger(value)) ms = value * 1000;
  else if (typeof value === 'string') {
    const match = GRACE_PERIOD.exec(value);
    if (match) ms = Number(match[1]) * GRACE_UNIT_MS[match[2] as keyof typeof GRACE_UNIT_MS];
  }
  if (!(ms >= 0 && ms <= MAX_ROTATION_GRACE_PERIOD_MS)) {
    throw invalidRequest(
      `${param} must be a duration from 0 to 7 days: a whole number of seconds, or a string like "90s", "15m", "1h" or "7d"`,
      param,
    );
  }
  return ms;
}

/**
 * The grace period of a rotation from its request body, in ms: `grace_period` checked by
 * {@link validateGracePeriod}, or {@link DEFAULT_ROTATION_GRACE_PERIOD_MS} (0) when left out. The
 * one reading of `POST /api/keys/:id/rotate` and of the dashboard's Rotate, so both take and refuse
 * the same values. The body's field names are checked by the caller.
 *
 * @example
 * gracePeriodFromBody({ grace_period: '1h' }); // 3600000
 * gracePeriodFromBody({}); // 0
 */
export function gracePeriodFromBody(body: Record<string, unknown>): number {
  return body.grace_period === undefined ? DEFAULT_ROTATION_GRACE_PERIOD_MS : validateGracePeriod(body.grace_period);
}

/** `active`: a boolean. */
export function validateActive(value: unknown, param = 'active'): boolean {
  if (typeof value !== 'boolean') throw invalidRequest(`${param} must be true or false`, param);
  return value;
}

/** A key id in a path or cursor: a positive integer. */
export function validateId(value: string, param = 'id'): number {
  const id = ID.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(id)) throw invalidRequest(`${param} must be a positive integer`, param);
  return id;
}

/** A new key's settings, each checked as the management API checks it. */
export interface KeySettings {
  name: string;
  expiresAt: number | null;
  limit: number | null;
  limitReset: LimitReset | null;
  rateLimit: RateLimitSetting | null;
  models: string[] | null;
}

/**
 * The settings of a key to create from a request body (`name` required; `expires_at`, `limit`,
 * `limit_reset`, `rate_limit`, `models` optional, `null` when left out), checked in that order so
 * the first bad field is the one named. The body's field names are checked by the caller.
 *
 * @example
 * const settings = keySettingsFromBody({ name: 'ci', limit: 5 }, Date.now());
 * // { name: 'ci', expiresAt: null, limit: 5, limitReset: null, rateLimit: null, models: null }
 */
export function keySettingsFromBody(body: Record<string, unknown>, now: number): KeySettings {
  if (body.name === undefined) throw invalidRequest('name is required', 'name');
  return {
    name: validateName(body.name),
    expiresAt: body.expires_at === undefined ? null : validateExpiresAt(body.expires_at, now),
    limit: body.limit === undefined ? null : validateLimit(body.limit),
    limitReset: body.limit_reset === undefined ? null : validateLimitReset(body.limit_reset),
    rateLimit: body.rate_limit === undefined ? null : validateRateLimit(body.rate_limit),
    models: body.models === undefined ? null : validateModels(body.models),
  };
}

/**
 * The changes to a key from a request body: only the fields it sets (`name`, `active`,
 * `expires_at`, `limit`, `limit_reset`, `rate_limit`, `models`), each checked. The body's field
 * names are checked by the caller.
 *
 * @example
 * keyChangesFromBody({ active: false }, Date.now()); // { active: false }
 */
export function keyChangesFromBody(body: Record<string, unknown>, now: number): KeyChanges {
  const changes: KeyChanges = {};
  if (body.name !== undefined) changes.name = validateName(body.name);
  if (body.active !== undefined) changes.active = validateActive(body.active);
  if (body.expires_at !== undefined) changes.expiresAt = validateExpiresAt(body.expires_at, now);
  if (body.limit !== undefined) changes.limit = validateLimit(body.limit);
  if (body.limit_reset !== undefined) changes.limitReset = validateLimitReset(body.limit_reset);
  if (body.rate_limit !== undefined) changes.rateLimit = validateRateLimit(body.rate_limit);
  if (body.models !== undefined) changes.models = validateModels(body.models);
  return changes;
}
