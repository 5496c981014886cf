/*
 * The money scripts of KeyvKeyStore on Redis: accounts with their opening entry, balance changes,
 * reservations with expiring holds, settlements with their ledger entry and usage counters, and
 * the ledger's reads and trimming. Each runs after RECORDS_PRELUDE and LEDGER_PRELUDE
 * (keyv-redis-lua.ts): every check first, then flush() and the writes.
 */

// createAccount: the record and, for a balance other than 0, its opening entry (and the
// reference 'opening', so a later change with that reference changes nothing). 0 = it exists.
export const CREATE_ACCOUNT = `
local account = payload
local id = raw(string_arg(account.id, 'an account id'))
local record_key = base .. 'account:' .. id
if redis.call('EXISTS', record_key) == 1 then return 0 end
local opening = nil
if account.balance ~= 0 then
  amount_arg(account.balance, -MAX_USD)
  opening = {
    type = account.balance > 0 and 'credit' or 'adjustment',
    amount = account.balance,
    balanceAfter = account.balance,
    reference = 'opening',
    createdAt = finite_arg(account.createdAt, 'a creation time'),
  }
end
save(record_key, { value = account })
if opening then
  redis.call('HSET', base .. 'ledger-references:' .. id, 'opening', add_entry(id, opening))
end
return 1
`;

// changeBalance: idempotent by (account, reference). The reference index keeps each reference's
// first entry for good (trimming leaves it), so a repeated reference answers that entry.
export const CHANGE_BALANCE = `
local id = raw(string_arg(payload.accountId, 'an account id'))
local kind = payload.type
if kind ~= 'credit' and kind ~= 'adjustment' then error({ err = 'ERR modelswitch: refused a balance change type' }) end
local amount = amount_arg(payload.amount, -MAX_USD)
if amount == 0 or (kind == 'credit' and amount < 0) then error({ err = 'ERR modelswitch: refused a credit <= 0 or an adjustment of 0' }) end
local reference = raw(string_arg(payload.reference, 'a reference'))
-- The backend checks the 200-character bound; 600 bytes is the most 200 UTF-16 units take in UTF-8.
if #reference == 0 or #reference > 600 then error({ err = 'ERR modelswitch: refused an empty or overlong reference' }) end
local note = optional(payload.note)
if note then string_arg(note, 'a note') end
local now = finite_arg(payload.now, 'a time')
local trim = lazy_trim_args()
local account = cached_account(id)
if not account then return false end
local references = base .. 'ledger-references:' .. id
local first = redis.call('HGET', references, reference)
if first then
  return envelope('{"applied":false,"entry":' .. first .. ',"account":' .. enc(account.entry.value) .. '}')
end
local balance = usd(account.entry.value.balance + amount)
account.entry.value.balance = balance
account.dirty = true
flush()
local encoded = add_entry(id, {
  type = kind, amount = amount, balanceAfter = balance, reference = payload.reference, note = note, createdAt = now,
})
redis.call('HSET', references, reference, encoded)
trim_after_write(id, trim)
return envelope('{"applied":true,"entry":' .. encoded .. ',"account":' .. enc(account.entry.value) .. '}')
`;

// reserveSpend: first the expired holds of the key's account and of this account are released
// (once each), then the rule of applyReservation in spend-rules.ts, and a new hold.
// Answers 'ok:<hold id>' or the reason.
export const RESERVE_SPEND = `
local amount = amount_arg(payload.amount, 0)
local now = finite_arg(payload.now, 'a time')
local expires = finite_arg(payload.expiresAt, 'a hold deadline')
if expires <= now then error({ err = 'ERR modelswitch: refused a hold deadline that is not after now' }) end
local period = payload.period
local account_id = raw(string_arg(payload.accountId, 'an account id'))
local key_id = tostring(payload.keyId)
local key = cached_key(key_id)
release_expired_holds_of(account_id, now)
if key and raw(key.entry.value.accountId) ~= account_id then release_expired_holds_of(raw(key.entry.value.accountId), now) end
local account = key and cached_account(account_id)
local answer = 'ok'
if not key then answer = 'key_not_found'
elseif not account then answer = 'account_not_found'
else
  local rec = key.entry.value
  local owner = account.entry.value
  local stored = rec.usagePeriod
  -- A later period already stored (a skewed clock) keeps its usage and counts it.
  local keep = stored == period or earlier(period, stored)
  local usage = 0
  if keep then usage = rec.usage end
  if not isnull(rec.limit) and (usage + rec.reserved >= rec.limit or usage + rec.reserved + amount > rec.limit + 1e-12) then
    answer = 'spend_limit_reached'
  else
    -- The account's available balance counts the holds of every key of the account.
    local available = owner.balance - owner.reserved
    if available <= 0 or available + 1e-12 < amount then
      answer = 'insufficient_balance'
    else
      local key_reserved = usd(rec.reserved + amount)
      local account_reserved = usd(owner.reserved + amount)
      if not keep then
        rec.usage = 0
        rec.usagePeriod = period
      end
      rec.reserved = key_reserved
      owner.reserved = account_reserved
      key.dirty = true
      account.dirty = true
    end
  end
end
flush()
if answer ~= 'ok' then return answer end
local hold = redis.call('INCR', base .. 'next-hold-id')
redis.call('HSET', base .. 'hold:' .. hold, 'key', key_id, 'account', account_id, 'amount', num(amount), 'expires', num(expires))
for _, index in ipairs(hold_indexes(account_id)) do redis.call('ZADD', index, num(expires), hold) end
return 'ok:' .. hold
`;

// settleSpend: a retry (usage whose request id is in the account's ledger) answers that entry and
// changes nothing. Otherwise it releases the hold if it still exists (never twice) and is this
// key's and account's, charges the cost as applySettlement in spend-rules.ts does (a deleted key
// still debits its account), and, when the cost is above 0 or usage is given, appends the usage
// entry, adds to the (day, key, model) counters and indexes the request and upstream ids. Answers
// the entry, or false when none.
export const SETTLE_SPEND = `
local cost = amount_arg(payload.cost, 0)
local now = finite_arg(payload.now, 'a time')
local period = payload.period
local account_id = raw(string_arg(payload.accountId, 'an account id'))
local key_id = tostring(payload.keyId)
local usage = optional(payload.usage)
if usage then
  string_arg(usage.model, 'a model')
  count_arg(usage.promptTokens, 'a token count')
  count_arg(usage.completionTokens, 'a token count')
  string_arg(usage.requestId, 'a request id')
  if not isnull(usage.upstreamId) then string_arg(usage.upstreamId, 'an upstream id') end
end
local trim = lazy_trim_args()
local day = string_arg(payload.day, 'a day')
if not string.match(day, '^%d%d%d%d%-%d%d%-%d%d$') then error({ err = 'ERR modelswitch: refused a day that is not YYYY-MM-DD' }) end
local hold = optional(payload.holdId)
if hold then string_arg(hold, 'a hold id') end
if usage then
  local first = redis.call('HGET', request_ids_of(account_id), 'r' .. raw(usage.requestId))
  local stored = first and stored_entry(account_id, first)
  if stored then return envelope(stored) end
end
if hold then release_hold(raw(hold), key_id, account_id) end
local key = cached_key(key_id)
if key then
  local rec = key.entry.value
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
  rec.lastUsedAt = math.max(last, now)
  key.dirty = true
end
local account = cached_account(account_id)
local entry, counters, row, counted = nil, nil, nil, nil
if account then
  local balance = usd(account.entry.value.balance - cost)
  account.entry.value.balance = balance
  account.dirty = true
  if cost > 0 or usage then
    entry = {
      type = 'usage', amount = 0 - cost, balanceAfter = balance, keyId = payload.keyId, createdAt = now,
      model = usage and usage.model, promptTokens = usage and usage.promptTokens,
      completionTokens = usage and usage.completionTokens, requestId = usage and usage.requestId,
      upstreamId = usage and optional(usage.upstreamId),
    }
    counters = base .. 'usage:' .. account_id .. ':' .. day
    row = key_id .. ':' .. (usage and raw(usage.model) or 'unknown')
    local requests, prompt, completion, spent = 0, 0, 0, 0
    local current = redis.call('HGET', counters, row)
    if current then
      local r, p, c, s = string.match(current, '^([^,]+),([^,]+),([^,]+),([^,]+)$')
      requests, prompt, completion, spent = tonumber(r), tonumber(p), tonumber(c), tonumber(s)
    end
    counted = table.concat({
      num(requests + 1),
      num(prompt + (usage and usage.promptTokens or 0)),
      num(completion + (usage and usage.completionTokens or 0)),
      num(usd(spent + cost)),
    }, ',')
  end
end
flush()
if not entry then return false end
local encoded = add_entry(account_id, entry)
redis.call('HSET', counters, row, counted)
redis.call('ZADD', base .. 'usage-days:' .. account_id, 'NX', (string.gsub(day, '-', '')), day)
trim_after_write(account_id, trim)
return envelope(encoded)
`;

// extendHold: a new deadline for a hold that still exists and belongs to the account. 1 or 0.
export const EXTEND_HOLD = `
local id = raw(string_arg(payload.holdId, 'a hold id'))
local expires = finite_arg(payload.expiresAt, 'a hold deadline')
local account_id = raw(string_arg(payload.accountId, 'an account id'))
local hold = redis.call('HMGET', base .. 'hold:' .. id, 'account')
if hold[1] ~= account_id then return 0 end
redis.call('HSET', base .. 'hold:' .. id, 'expires', num(expires))
for _, index in ipairs(hold_indexes(account_id)) do redis.call('ZADD', index, 'XX', num(expires), id) end
return 1
`;

// releaseExpiredHolds: up to 'limit' holds of any account past their deadline, from the
// deadline index, each released once. Answers how many.
export const RELEASE_EXPIRED_HOLDS = `
local now = finite_arg(payload.now, 'a time')
local limit = count_arg(payload.limit, 'a limit')
local count = 0
for _, hold in ipairs(redis.call('ZRANGEBYSCORE', base .. 'holds', '-inf', num(now), 'LIMIT', 0, limit)) do
  if release_hold(hold) then count = count + 1 end
end
flush()
return count
`;

// rotateKey: the new hash; the current one stays as previousHash only while the grace lasts.
export const ROTATE_KEY = `
local hash = string_arg(payload.hash, 'a hash')
local now = finite_arg(payload.now, 'a time')
local grace = optional(payload.previousKeyExpiresAt)
if grace then finite_arg(grace, 'a deadline') end
local entry, key = key_entry(payload.id)
if not entry then return false end
local rec = entry.value
if grace and grace > now then
  rec.previousHash = rec.hash
  rec.previousKeyExpiresAt = grace
else
  rec.previousHash = cjson.null
  rec.previousKeyExpiresAt = cjson.null
end
rec.hash = hash
local encoded = enc(entry)
redis.call('SET', key, encoded)
return encoded
`;

// listLedger: newest first, ids below 'before'. A key's entries and the credits or adjustments
// come from their own index; a 'usage' filter reads the ledger and skips the few other entries.
export const LIST_LEDGER = `
local id = raw(string_arg(payload.accountId, 'an account id'))
local limit = count_arg(payload.limit, 'a limit')
local top = '+inf'
if not isnull(payload.before) then top = '(' .. num(finite_arg(payload.before, 'a cursor')) end
local ledger = ledger_of(id)
local kind = optional(payload.type)
local found = {}
local function from_index(index)
  for _, entry_id in ipairs(redis.call('ZREVRANGEBYSCORE', index, top, '-inf', 'LIMIT', 0, limit + 1)) do
    local stored = stored_entry(id, entry_id)
    if stored then found[#found + 1] = stored end
  end
end
if not isnull(payload.keyId) then
  -- Only usage entries carry a key.
  if not kind or kind == 'usage' then from_index(base .. 'ledger-by-key:' .. id .. ':' .. tostring(payload.keyId)) end
elseif kind == 'credit' or kind == 'adjustment' then
  from_index(base .. 'ledger-by-type:' .. id .. ':' .. kind)
elseif kind == 'usage' then
  local batch = limit + 1
  while #found <= limit do
    local page = redis.call('ZREVRANGEBYSCORE', ledger, top, '-inf', 'WITHSCORES', 'LIMIT', 0, batch)
    for i = 1, #page, 2 do
      -- Strings are JSON-escaped, so this text appears only as an entry's own type.
      if string.find(page[i], '"type":"usage"', 1, true) then
        found[#found + 1] = page[i]
        if #found > limit then break end
      end
    end
    if #page < 2 * batch then break end
    top = '(' .. page[#page]
  end
else
  found = redis.call('ZREVRANGEBYSCORE', ledger, top, '-inf', 'LIMIT', 0, limit + 1)
end
local more = #found > limit
if more then found[#found] = nil end
return envelope('{"entries":[' .. table.concat(found, ',') .. '],"hasMore":' .. (more and 'true' or 'false') .. '}')
`;

// findUsageEntry: the usage entry indexed under this request id, else under this upstream id.
export const FIND_USAGE_ENTRY = `
local id = raw(string_arg(payload.accountId, 'an account id'))
local wanted = raw(string_arg(payload.id, 'an id'))
for _, entry_id in ipairs(redis.call('HMGET', request_ids_of(id), 'r' .. wanted, 'u' .. wanted)) do
  if entry_id then
    local stored = stored_entry(id, entry_id)
    if stored then return envelope(stored) end
  end
end
return false
`;

// getUsage: the account's counters of the days from..to, as a flat list of day, '<key id>:<model>'
// and 'requests,promptTokens,completionTokens,cost'. Reads the days that have counters only.
export const GET_USAGE = `
local id = raw(string_arg(payload.accountId, 'an account id'))
local function day_score(day)
  if type(day) ~= 'string' or not string.match(day, '^%d%d%d%d%-%d%d%-%d%d$') then
    error({ err = 'ERR modelswitch: refused a day that is not YYYY-MM-DD' })
  end
  return (string.gsub(day, '-', ''))
end
local rows = {}
for _, day in ipairs(redis.call('ZRANGEBYSCORE', base .. 'usage-days:' .. id, day_score(payload.from), day_score(payload.to))) do
  local fields = redis.call('HGETALL', base .. 'usage:' .. id .. ':' .. day)
  for i = 1, #fields, 2 do
    rows[#rows + 1] = day
    rows[#rows + 1] = fields[i]
    rows[#rows + 1] = fields[i + 1]
  end
end
return rows
`;

// trimLedger, one batch: the accounts of one SSCAN step, at most 'budget' entries removed. Answers
// { removed, cursor, done }: the cursor to go on from (the same one when the budget ran out before
// an account was done), and 1 once the walk over every account is complete.
export const TRIM_LEDGER = `
local before = finite_arg(payload.before, 'a time')
local budget = count_arg(payload.budget, 'a budget')
local cursor = string_arg(payload.cursor, 'a cursor')
local scan = redis.call('SSCAN', base .. 'ledger-accounts', cursor, 'COUNT', 100)
local removed = 0
for _, account in ipairs(scan[2]) do
  local count, done = trim_account(account, before, budget - removed)
  removed = removed + count
  if not done then return { removed, cursor, 0 } end
end
return { removed, scan[1], scan[1] == '0' and 1 or 0 }
`;
