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
local function handle_of(id)
  local entry = load(base .. 'key-id:' .. id)
  if not entry then return nil end
  return entry.value
end
local function key_entry(id)
  local handle = handle_of(id)
  if not handle then return nil, nil end
  local key = base .. 'key:' .. handle
  return load(key), key
end
local function usage_in(rec, period)
  if rec.usagePeriod == period then return rec.usage end
  return 0
end
`;

const INSERT_KEY = `
local rec = payload
local record_key = base .. 'key:' .. rec.handle
if redis.call('EXISTS', record_key) == 1 then return redis.error_reply('key handle already exists') end
local id = redis.call('INCR', base .. 'next-key-id')
rec.id = id
save(record_key, { value = rec })
save(base .. 'key-id:' .. id, { value = rec.handle })
redis.call('ZADD', base .. 'account-keys:' .. rec.type .. ':' .. rec.accountId, id, rec.handle)
return id
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
redis.call('ZREM', base .. 'account-keys:' .. rec.type .. ':' .. rec.accountId, rec.handle)
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
local key = base .. 'account:' .. payload.accountId
local entry = load(key)
if not entry then return false end
entry.value.balance = round(entry.value.balance + payload.delta)
local encoded = enc(entry)
redis.call('SET', key, encoded)
return encoded
`;

// Same rule as applyReservation in spend.ts.
const RESERVE_SPEND = `
local keyEntry, key = key_entry(payload.keyId)
if not keyEntry then return 'key_not_found' end
local accountKey = base .. 'account:' .. payload.accountId
local accountEntry = load(accountKey)
if not accountEntry then return 'account_not_found' end
local rec = keyEntry.value
local account = accountEntry.value
local amount = payload.amount
local period = payload.period
local usage = usage_in(rec, period)
if not isnull(rec.limit) and usage + rec.reserved + amount > rec.limit + 1e-12 then return 'spend_limit_reached' end
local available = account.balance - account.reserved
if available <= 0 or available + 1e-12 < amount then return 'insufficient_balance' end
if rec.usagePeriod ~= period then
  rec.usage = 0
  rec.usagePeriod = period
end
rec.reserved = round(rec.reserved + amount)
account.reserved = round(account.reserved + amount)
save(key, keyEntry)
save(accountKey, accountEntry)
return 'ok'
`;

// Same rule as applySettlement in spend.ts; a deleted key still debits its account.
const SETTLE_SPEND = `
local keyEntry, key = key_entry(payload.keyId)
if keyEntry then
  local rec = keyEntry.value
  rec.reserved = math.max(0, round(rec.reserved - payload.reserved))
  rec.usage = round(usage_in(rec, payload.period) + payload.cost)
  rec.usagePeriod = payload.period
  local last = rec.lastUsedAt
  if isnull(last) then last = 0 end
  rec.lastUsedAt = math.max(last, payload.now)
  save(key, keyEntry)
end
local accountKey = base .. 'account:' .. payload.accountId
local accountEntry = load(accountKey)
if accountEntry then
  local account = accountEntry.value
  account.reserved = math.max(0, round(account.reserved - payload.reserved))
  account.balance = round(account.balance - payload.cost)
  save(accountKey, accountEntry)
end
return 1
`;

// The TTL is relative to Redis time (the window itself follows the injected clock): long enough
// for the window to end, short enough that idle counters disappear.
const HIT_COUNTER = `
local key = base .. 'counter:' .. payload.name .. ':' .. payload.windowStart
local count = redis.call('INCRBY', key, payload.amount)
if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, payload.ttlMs) end
return count
`;

const LIST_KEYS = `
local index = base .. 'account-keys:' .. payload.type .. ':' .. payload.accountId
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
  updateKey: script(UPDATE_KEY),
  deleteKey: script(DELETE_KEY),
  touchKey: script(TOUCH_KEY),
  adjustBalance: script(ADJUST_BALANCE),
  reserveSpend: script(RESERVE_SPEND),
  settleSpend: script(SETTLE_SPEND),
  hitCounter: script(HIT_COUNTER),
  listKeys: script(LIST_KEYS),
} as const;
