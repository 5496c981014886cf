import { LEDGER_PRELUDE, RECORDS_PRELUDE, type RedisScript, luaScript } from './keyv-redis-lua.js';
import {
  CHANGE_BALANCE,
  CREATE_ACCOUNT,
  EXTEND_HOLD,
  FIND_USAGE_ENTRY,
  GET_USAGE,
  LIST_LEDGER,
  RELEASE_EXPIRED_HOLDS,
  RESERVE_SPEND,
  ROTATE_KEY,
  SETTLE_SPEND,
  TRIM_LEDGER,
} from './keyv-redis-ledger-scripts.js';

/*
 * The Lua scripts KeyvKeyStore runs on Redis so that each mutation is one atomic step shared by
 * every gateway process. Records stay in Keyv's own format (`{"value":{…}}` JSON at the Redis key
 * Keyv uses), so `keyv.get()` reads what these scripts write. This file holds the scripts of keys,
 * listing and counters, and the registry of every script; the money scripts are in
 * keyv-redis-ledger-scripts.ts, the helpers they start with in keyv-redis-lua.ts.
 */

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

/** Every script KeyvKeyStore runs on Redis. */
export const REDIS_SCRIPTS = {
  insertKey: records(INSERT_KEY),
  getKey: records(GET_KEY),
  updateKey: records(UPDATE_KEY),
  deleteKey: records(DELETE_KEY),
  touchKey: records(TOUCH_KEY),
  hitCounter: records(HIT_COUNTER),
  listKeys: records(LIST_KEYS),
  createAccount: ledger(CREATE_ACCOUNT),
  changeBalance: ledger(CHANGE_BALANCE),
  reserveSpend: ledger(RESERVE_SPEND),
  settleSpend: ledger(SETTLE_SPEND),
  extendHold: ledger(EXTEND_HOLD),
  releaseExpiredHolds: ledger(RELEASE_EXPIRED_HOLDS),
  rotateKey: ledger(ROTATE_KEY),
  listLedger: ledger(LIST_LEDGER),
  findUsageEntry: ledger(FIND_USAGE_ENTRY),
  getUsage: ledger(GET_USAGE),
  trimLedger: ledger(TRIM_LEDGER),
} as const satisfies Record<string, RedisScript>;

/** A script of keys, listing or counters. */
function records(body: string): RedisScript {
  return luaScript(RECORDS_PRELUDE, body);
}

/** A script that may hold, charge or write ledger entries. */
function ledger(body: string): RedisScript {
  return luaScript(RECORDS_PRELUDE, LEDGER_PRELUDE, body);
}
