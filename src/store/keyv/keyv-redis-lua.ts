import { createHash } from 'node:crypto';

/*
 * The Lua helpers every KeyvKeyStore script on Redis starts with (the scripts themselves are in
 * keyv-redis-scripts.ts and keyv-redis-ledger-scripts.ts).
 *
 * Every script takes ARGV[1] = the Redis key prefix of the store (Keyv namespace + store prefix)
 * and ARGV[2] = a JSON payload serialized by Keyv's serializer, so strings carry Keyv's escaping.
 * Key names are built inside the scripts, which is why Redis Cluster is not supported.
 */

/**
 * Reading and writing records in Keyv's format. cjson.encode prints at most 14 significant digits,
 * which would round balances; `enc` prints every number with the fewest digits (15 to 17) that
 * read back as the exact double, as JavaScript's own JSON does for most values. cjson decodes `[]`
 * and `{}` alike: an empty table is written as `[]`, since the records hold arrays (a key's
 * `models`) but never an empty object.
 */
export const RECORDS_PRELUDE = `
local base = ARGV[1]
local payload = cjson.decode(ARGV[2]).value
local function num(x)
  local text = string.format('%.15g', x)
  if tonumber(text) == x then return text end
  text = string.format('%.16g', x)
  if tonumber(text) == x then return text end
  return string.format('%.17g', x)
end
local function enc(v)
  local t = type(v)
  if t == 'table' then
    local n = #v
    local count = 0
    for _ in pairs(v) do count = count + 1 end
    if count == n then
      local items = {}
      for i = 1, n do items[i] = enc(v[i]) end
      return '[' .. table.concat(items, ',') .. ']'
    end
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = cjson.encode(k) .. ':' .. enc(x) end
    return '{' .. table.concat(parts, ',') .. '}'
  elseif t == 'number' then return num(v)
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
-- MAX_USD in spend-rules.ts. A result beyond it (or inf/nan, which round() and num() would write as
-- an unparseable 'inf') is refused before anything is written: the caller gets an error, the data stays.
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

/**
 * Holds, ledger entries, their indexes and the usage counters (the layout is in docs/redis.md,
 * "Ledger, holds and usage on Redis"). The scripts that use these read first, change the records
 * they read in the caches below, and call `flush()` only once every check passed: a refused call
 * (an error) writes nothing. Ledger entries are stored as compact JSON (no `null` fields, no
 * account id: the account's set names it) and answered inside a Keyv envelope, so strings keep
 * Keyv's escaping and the backend reads them with the instance's deserializer.
 */
export const LEDGER_PRELUDE = `
local function finite_arg(x, what)
  if type(x) ~= 'number' or x ~= x or x == math.huge or x == -math.huge then
    error({ err = 'ERR modelswitch: refused ' .. what .. ' that is not a finite number' })
  end
  return x
end
-- Whole numbers a double holds exactly: token counts, limits.
local function count_arg(x, what)
  if type(x) ~= 'number' or x ~= x or x < 0 or x > 9007199254740991 or x ~= math.floor(x) then
    error({ err = 'ERR modelswitch: refused ' .. what .. ' that is not a whole number >= 0' })
  end
  return x
end
local function string_arg(x, what)
  if type(x) ~= 'string' then error({ err = 'ERR modelswitch: refused ' .. what .. ' that is not a string' }) end
  return x
end
local function optional(v) if isnull(v) then return nil end return v end

-- Records read by this call (false: not found), changed in place, written back by flush().
local keys_read, accounts_read = {}, {}
local function cached_key(id)
  local name = tostring(id)
  local found = keys_read[name]
  if found == nil then
    local entry, redis_key = key_entry(name)
    found = entry and { entry = entry, redis_key = redis_key } or false
    keys_read[name] = found
  end
  return found or nil
end
local function cached_account(id)
  local found = accounts_read[id]
  if found == nil then
    local redis_key = base .. 'account:' .. id
    local entry = load(redis_key)
    found = entry and { entry = entry, redis_key = redis_key } or false
    accounts_read[id] = found
  end
  return found or nil
end

-- A hold is the hash hold:<id> (key, account, amount, expires), indexed by deadline in two sorted
-- sets: every hold (the sweeper's) and the account's (a reservation's).
local released, released_list, stale_holds = {}, {}, {}
local function hold_indexes(account)
  return { base .. 'holds', base .. 'holds-by-account:' .. account }
end
-- Releases a hold once: its amount leaves its key's and its account's reserved (the records are
-- written by flush(), which also deletes the hold). A hold already gone releases nothing, nor one
-- of another key or account than 'key_id' and 'account' when they are given (a settlement's).
local function release_hold(id, key_id, account)
  if released[id] then return false end
  local hold = redis.call('HMGET', base .. 'hold:' .. id, 'key', 'account', 'amount')
  if not hold[1] then
    stale_holds[#stale_holds + 1] = id
    return false
  end
  if key_id and (hold[1] ~= key_id or hold[2] ~= account) then return false end
  local amount = tonumber(hold[3])
  local key = cached_key(hold[1])
  if key then
    key.entry.value.reserved = math.max(0, usd(key.entry.value.reserved - amount))
    key.dirty = true
  end
  local account = cached_account(hold[2])
  if account then
    account.entry.value.reserved = math.max(0, usd(account.entry.value.reserved - amount))
    account.dirty = true
  end
  released[id] = true
  released_list[#released_list + 1] = { id = id, account = hold[2] }
  return true
end
local function release_expired_holds_of(account, now)
  for _, hold in ipairs(redis.call('ZRANGEBYSCORE', base .. 'holds-by-account:' .. account, '-inf', num(now))) do
    release_hold(hold)
  end
end
local function flush()
  for _, record in pairs(keys_read) do
    if record and record.dirty then save(record.redis_key, record.entry) end
  end
  for _, record in pairs(accounts_read) do
    if record and record.dirty then save(record.redis_key, record.entry) end
  end
  for _, hold in ipairs(released_list) do
    redis.call('DEL', base .. 'hold:' .. hold.id)
    for _, index in ipairs(hold_indexes(hold.account)) do redis.call('ZREM', index, hold.id) end
  end
  for _, id in ipairs(stale_holds) do redis.call('ZREM', base .. 'holds', id) end
end

-- An account's entries: ledger:<account> (score id, member the entry), ledger-by-key:<account>:<key
-- id> (usage entries) and ledger-by-type:<account>:<credit|adjustment> (score and member id), and
-- the hash ledger-request-ids:<account> ('r'..requestId and 'u'..upstreamId -> id).
local function ledger_of(account) return base .. 'ledger:' .. account end
local function request_ids_of(account) return base .. 'ledger-request-ids:' .. account end
local function request_id_fields(entry)
  local fields = {}
  if not isnull(entry.requestId) then fields[#fields + 1] = 'r' .. raw(entry.requestId) end
  if not isnull(entry.upstreamId) then fields[#fields + 1] = 'u' .. raw(entry.upstreamId) end
  return fields
end
local function add_entry(account, entry)
  local id = redis.call('INCR', base .. 'next-entry-id')
  entry.id = id
  local encoded = enc(entry)
  redis.call('ZADD', ledger_of(account), id, encoded)
  if entry.type == 'usage' then
    redis.call('ZADD', base .. 'ledger-by-key:' .. account .. ':' .. tostring(entry.keyId), id, id)
    for _, field in ipairs(request_id_fields(entry)) do redis.call('HSET', request_ids_of(account), field, id) end
  else
    redis.call('ZADD', base .. 'ledger-by-type:' .. account .. ':' .. entry.type, id, id)
  end
  redis.call('SADD', base .. 'ledger-accounts', account)
  return encoded
end
local function stored_entry(account, id)
  return redis.call('ZRANGEBYSCORE', ledger_of(account), id, id)[1]
end
-- Removes the account's oldest entries (in id order) while their createdAt < cutoff, at most
-- 'most', with their index entries (the reference index and the usage counters stay), so the
-- kept entries remain an unbroken run of the newest. Answers how many, and whether it stopped
-- at an entry to keep (or an empty ledger) rather than at 'most'.
local function trim_account(account, cutoff, most)
  local ledger = ledger_of(account)
  local removed = 0
  while removed < most do
    local oldest = redis.call('ZRANGE', ledger, 0, math.min(most - removed, 100) - 1)
    if #oldest == 0 then break end
    for _, stored in ipairs(oldest) do
      local entry = cjson.decode(stored)
      if entry.createdAt >= cutoff then return removed, true end
      local id = tostring(entry.id)
      if entry.type == 'usage' then
        redis.call('ZREM', base .. 'ledger-by-key:' .. account .. ':' .. tostring(entry.keyId), id)
        for _, field in ipairs(request_id_fields(entry)) do
          -- A later entry with the same upstream id owns the field now: leave it.
          if redis.call('HGET', request_ids_of(account), field) == id then redis.call('HDEL', request_ids_of(account), field) end
        end
      else
        redis.call('ZREM', base .. 'ledger-by-type:' .. account .. ':' .. entry.type, id)
      end
      redis.call('ZREM', ledger, stored)
      removed = removed + 1
    end
  end
  local empty = redis.call('EXISTS', ledger) == 0
  if empty then redis.call('SREM', base .. 'ledger-accounts', account) end
  return removed, empty
end
-- The lazy trim of a write: at most payload.trimPerWrite of the account's oldest entries created
-- before payload.trimBefore (the backend works it out from the write's time; null keeps every
-- entry). A writing script reads these with its other arguments, before its first write.
local function lazy_trim_args()
  local before = optional(payload.trimBefore)
  if before then finite_arg(before, 'a trim time') end
  return { before = before, most = count_arg(payload.trimPerWrite, 'a trim count') }
end
local function trim_after_write(account, trim)
  if trim.before then trim_account(account, trim.before, trim.most) end
end
local function envelope(json) return '{"value":' .. json .. '}' end
`;

/** A Lua script and its SHA-1, for `EVALSHA` with a fallback to `EVAL` after a `NOSCRIPT`. */
export interface RedisScript {
  readonly source: string;
  readonly sha: string;
}

/** A script from its preludes and body, with the SHA-1 Redis caches it under. */
export function luaScript(...parts: string[]): RedisScript {
  const source = parts.join('');
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}
