import { createHash } from 'node:crypto';

/*
 * The Lua scripts KeyvKeyStore runs on Redis so that each mutation is one atomic step shared by
 * every gateway process. Records stay in Keyv's own format (`{"value":{…}}` JSON at the Redis key
 * Keyv uses), so `keyv.get()` reads what these scripts write.
 *
 * Every script takes ARGV[1] = the Redis key prefix of the store (Keyv namespace + store prefix)
 * and ARGV[2] = a JSON payload serialized by Keyv's serializer, so strings carry Keyv's escaping.
 * Key names are built inside the scripts, which is why Redis Cluster is not supported.
 */

// cjson.encode prints at most 14 significant digits, which would round balances; this encoder
// prints every number with 17 so JavaScript reads back the exact double. Records hold no arrays.
const PRELUDE = `
local base = ARGV[1]
local payload = cjson.decode(ARGV[2]).value
local function enc(v)
  local t = type(v)
  if t == 'table' then
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = cjson.encode(k) .. ':' .. enc(x) end
    return '{' .. table.concat(parts, ',') .. '}'
  elseif t == 'number' then return string.format('%.17g', v)
  elseif t == 'string' then return cjson.encode(v)
  elseif t == 'boolean' then return v and 'true' or 'false'
  end
  return 'null'
end
local function load(key)
  local raw = redis.call('GET', key)
  if not raw then return nil end
  return cjson.decode(raw)
end
local function save(key, envelope) redis.call('SET', key, enc(envelope)) end
local function round(x) return math.floor(x * 1e10 + 0.5) / 1e10 end
local function isnull(v) return v == nil or v == cjson.null end
-- Keyv's serializer escapes a string that starts with ':' by doubling the colon; Keyv names its
-- Redis keys with the raw string, so key names are built from unescaped strings.
local function raw(s)
  if string.sub(s, 1, 1) == ':' then return string.sub(s, 2) end
  return s
end
-- MAX_USD in spend.ts. A result beyond it (or inf/nan, which round() and %.17g would write as an
-- unparseable 'inf') is refused before anything is written: the caller gets an error, the data stays.
local MAX_USD = 1e12
local function usd(x)
  local r = round(x)
  if r ~= r or r > MAX_USD or r < -MAX_USD then error({ err = 'ERR modelswitch: refused a USD amount that is not finite or beyond 1e12' }) end
  return r
end
local function amount_arg(x, min)
  if type(x) ~= 'number' or x ~= x or x < min or x > MAX_USD then
    error({ err = 'ERR modelswitch: refused an amount that is not a finite number in range' })
  end
  return x
end
-- Periods of one reset rule have one length and sort as strings; other pairs are not comparable.
local function earlier(stored, period)
  return type(stored) == 'string' and type(period) == 'string' and #stored == #period and stored < period
end
local function handle_of(id)
  local entry = load(base .. 'key-id:' .. id)
  if not entry then return nil end
  return entry.value
end
local function key_entry(id)
  local handle = handle_of(id)
  if not handle then return nil, nil end
  local key = base .. 'key:' .. raw(handle)
  return load(key), key
end
`;

const INSERT_KEY = `
local rec = payload
local record_key = base .. 'key:' .. raw(rec.handle)
if redis.call('EXISTS', record_key) == 1 then return redis.error_reply('key handle already exists') end
local id = redis.call('INCR', base .. 'next-key-id')
rec.id = id
save(record_key, { value = rec })
save(base .. 'key-id:' .. id, { value = rec.handle })
redis.call('ZADD', base .. 'account-keys:' .. raw(rec.type) .. ':' .. raw(rec.accountId), id, raw(rec.handle))
return id
`;

// getKey in one round trip: the handle by id, then the record, answered as Keyv stored it.
const GET_KEY = `
local handle = handle_of(payload.id)
if not handle then return false end
return redis.call('GET', base .. 'key:' .. raw(handle))
`;

const UPDATE_KEY = `
local entry, key = key_entry(payload.id)
if not entry then return false end
for field, value in pairs(payload.changes) do entry.value[field] = value end
local encoded = enc(entry)
redis.call('SET', key, encoded)
return encoded
`;

const DELETE_KEY = `
local entry, key = key_entry(payload.id)
if not entry then return 0 end
local rec = entry.value
redis.call('DEL', key, base .. 'key-id:' .. payload.id)
redis.call('ZREM', base .. 'account-keys:' .. raw(rec.type) .. ':' .. raw(rec.accountId), raw(rec.handle))
return 1
`;

const TOUCH_KEY = `
local entry, key = key_entry(payload.id)
if not entry then return 0 end
if isnull(entry.value.lastUsedAt) or entry.value.lastUsedAt < payload.at then
  entry.value.lastUsedAt = payload.at
  save(key, entry)
end
return 1
`;

const ADJUST_BALANCE = `
local delta = amount_arg(payload.delta, -MAX_USD)
local key = base .. 'account:' .. raw(payload.accountId)
local entry = load(key)
if not entry then return false end
entry.value.balance = usd(entry.value.balance + delta)
local encoded = enc(entry)
redis.call('SET', key, encoded)
return encoded
`;

// Same rule as applyReservation in spend.ts.
const RESERVE_SPEND = `
local amount = amount_arg(payload.amount, 0)
local period = payload.period
local keyEntry, key = key_entry(payload.keyId)
if not keyEntry then return 'key_not_found' end
local accountKey = base .. 'account:' .. raw(payload.accountId)
local accountEntry = load(accountKey)
if not accountEntry then return 'account_not_found' end
local rec = keyEntry.value
local account = accountEntry.value
local stored = rec.usagePeriod
-- A later period already stored (a skewed clock) keeps its usage and counts it.
local keep = stored == period or earlier(period, stored)
local usage = 0
if keep then usage = rec.usage end
if not isnull(rec.limit) and (usage + rec.reserved >= rec.limit or usage + rec.reserved + amount > rec.limit + 1e-12) then return 'spend_limit_reached' end
local available = account.balance - account.reserved
if available <= 0 or available + 1e-12 < amount then return 'insufficient_balance' end
local keyReserved = usd(rec.reserved + amount)
local accountReserved = usd(account.reserved + amount)
if not keep then
  rec.usage = 0
  rec.usagePeriod = period
end
rec.reserved = keyReserved
account.reserved = accountReserved
save(key, keyEntry)
save(accountKey, accountEntry)
return 'ok'
`;

// Same rule as applySettlement in spend.ts; a deleted key still debits its account. Every new
// value is computed (and checked by usd()) before the first write, so a refusal writes nothing.
const SETTLE_SPEND = `
local reserved = amount_arg(payload.reserved, 0)
local cost = amount_arg(payload.cost, 0)
local period = payload.period
local keyEntry, key = key_entry(payload.keyId)
local accountKey = base .. 'account:' .. raw(payload.accountId)
local accountEntry = load(accountKey)
if keyEntry then
  local rec = keyEntry.value
  rec.reserved = math.max(0, usd(rec.reserved - reserved))
  if rec.usagePeriod == period then
    rec.usage = usd(rec.usage + cost)
  elseif earlier(rec.usagePeriod, period) then
    rec.usage = usd(cost)
    rec.usagePeriod = period
  end
  -- Otherwise a later period (or another reset rule's) began after this request reserved: its
  -- usage belongs to newer requests and stays.
  local last = rec.lastUsedAt
  if isnull(last) then last = 0 end
  rec.lastUsedAt = math.max(last, payload.now)
end
if accountEntry then
  local account = accountEntry.value
  account.reserved = math.max(0, usd(account.reserved - reserved))
  account.balance = usd(account.balance - cost)
end
if keyEntry then save(key, keyEntry) end
if accountEntry then save(accountKey, accountEntry) end
return 1
`;

// The TTL is relative to Redis time (the window itself follows the injected clock): long enough
// for the window to end, short enough that idle counters disappear.
const HIT_COUNTER = `
local amount = payload.amount
if type(amount) ~= 'number' or amount ~= amount or amount < 0 then
  error({ err = 'ERR modelswitch: refused a counter amount that is not a finite number >= 0' })
end
local key = base .. 'counter:' .. raw(payload.name) .. ':' .. payload.windowStart
local count = redis.call('INCRBY', key, amount)
if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, payload.ttlMs) end
return count
`;

const LIST_KEYS = `
local index = base .. 'account-keys:' .. raw(payload.type) .. ':' .. raw(payload.accountId)
local handles = redis.call('ZRANGEBYSCORE', index, '(' .. payload.after, '+inf', 'LIMIT', 0, payload.limit + 1)
local records = {}
for i, handle in ipairs(handles) do
  records[i] = redis.call('GET', base .. 'key:' .. handle) or ''
end
return records
`;

/** A Lua script and its SHA-1, for `EVALSHA` with a fallback to `EVAL` after a `NOSCRIPT`. */
export interface RedisScript {
  readonly source: string;
  readonly sha: string;
}

function script(body: string): RedisScript {
  const source = PRELUDE + body;
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

/** Every script KeyvKeyStore runs on Redis. */
export const REDIS_SCRIPTS = {
  insertKey: script(INSERT_KEY),
  getKey: script(GET_KEY),
  updateKey: script(UPDATE_KEY),
  deleteKey: script(DELETE_KEY),
  touchKey: script(TOUCH_KEY),
  adjustBalance: script(ADJUST_BALANCE),
  reserveSpend: script(RESERVE_SPEND),
  settleSpend: script(SETTLE_SPEND),
  hitCounter: script(HIT_COUNTER),
  listKeys: script(LIST_KEYS),
} as const;
