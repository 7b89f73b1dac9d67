package redis

import rueidis "github.com/redis/rueidis"

// appendScript is the whole of Append, atomic per user, for one or more
// appends (of any users on one Redis node; on a Redis Cluster, of one slot),
// each in turn, each with its own reply: appendPipe sends the appends of
// concurrent callers in one call, so the call and the lineage check are paid
// once for all of them.
//
// KEYS: per append, in order: meta, log, live channel, [idempotency key].
// ARGV: 1 MaxEvents, 2 MaxAge in µs, 3 key TTL in ms, 4 idempotency TTL in
// ms, 5 MaxBytes, 6 the number of appends; then six per append: new epoch
// (used only when meta is missing), frame template (protocol.EncodeEvent
// output with seq 0 and epoch ""), template bytes before the placeholder,
// template offset after it, ts in µs (the producer's clock), and its number
// of keys (3, or 4 with an idempotency key).
//
// meta fields: e epoch, h head seq, t ts (µs) of the newest event, clamped so
// it never decreases, n the time (µs) at which the oldest retained event
// expires (a lower bound: the age scan runs only once t reaches it), b the
// frame bytes the log holds, r the replication id of the master that wrote
// it.
//
// The oldest entries are dropped while the log holds more than MaxEvents,
// more than MaxBytes (the newest entry always stays) or, when the age scan is
// due, entries older than MaxAge; b follows every entry added or dropped.
// log entries: id <seq>-0, fields t (µs, non-decreasing) and f (frame).
//
// Returns one reply per append: {seq, epoch} for a new event, {seq, epoch,
// frame} for an idempotent repeat, or an error (a command of that append
// failed, e.g. a key of the wrong type: the other appends are not affected).
var appendScript = rueidis.NewLuaScript(appendLua)

// appendArgc is the number of appendScript's arguments per append, and
// appendCommon the number before them.
const (
	appendArgc   = 6
	appendCommon = 6
)

const appendLua = `
local maxEv, maxAge, maxB = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
local keyTTL, idemTTL = ARGV[3], ARGV[4]
` + lineage + `
local function append1(meta, log, live, idem, newEpoch, tpl, pre, post, t)
  local m = redis.call('HMGET', meta, 'e', 'h', 't', 'n', 'b', 'r')
  local epoch = m[1]
  if epoch and m[6] == rid2 then
    -- written by the master this one replicated before its promotion: it
    -- may lack events that were delivered (failover): new epoch.
    epoch = nil
  end
  if idem and epoch then
    local d = redis.call('HMGET', idem, 'e', 's', 'f')
    if d[1] == epoch then return {d[2], epoch, d[3]} end
  end
  if not epoch then
    -- history is gone (never was, expired, evicted or flushed): new epoch,
    -- and whatever log an older epoch left behind goes with it.
    epoch = newEpoch
    redis.call('DEL', log)
    m = {epoch, nil, nil, nil, nil}
  end
  local seq = (tonumber(m[2]) or 0) + 1
  local seqs = string.format('%d', seq)
  local frame = string.sub(tpl, 1, pre) .. ',"seq":' .. seqs .. ',"epoch":"' .. epoch .. '"' .. string.sub(tpl, post + 1)
  local last = tonumber(m[3])
  if last and last > t then t = last end
  local ts = string.format('%d', t)
  redis.call('XADD', log, seqs .. '-0', 't', ts, 'f', frame)
  local bytes = (tonumber(m[5]) or 0) + #frame
` + trimLua + `
  redis.call('HSET', meta, 'e', epoch, 'h', seqs, 't', ts, 'n', string.format('%d', nxt), 'b', string.format('%d', bytes), 'r', rid)
  redis.call('PEXPIRE', meta, keyTTL)
  redis.call('PEXPIRE', log, keyTTL)
  if idem then
    redis.call('HSET', idem, 'e', epoch, 's', seqs, 'f', frame)
    redis.call('PEXPIRE', idem, idemTTL)
  end
  redis.call('SPUBLISH', live, frame)
  return {seqs, epoch}
end
local out, k = {}, 1
for i = 0, tonumber(ARGV[6]) - 1 do
  local a = 7 + i * 6
  local nk = tonumber(ARGV[a + 5])
  local idem = nil
  if nk == 4 then idem = KEYS[k + 3] end
  local ok, r = pcall(append1, KEYS[k], KEYS[k + 1], KEYS[k + 2], idem, ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]))
  if not ok and not (type(r) == 'table' and r.err) then r = {err = tostring(r)} end
  out[i + 1] = r
  k = k + nk
end
return out
`

// trimLua drops the oldest entries of log while it holds more than maxEv,
// more than maxB frame bytes (the newest entry always stays) or, when the age
// scan is due, entries older than maxAge before t (the newest ts); bytes
// follows. It expects the locals log, m (the meta fields), t, bytes, maxEv,
// maxAge and maxB, and leaves nxt, the time the oldest retained entry
// expires. The entries appended by the script are never dropped by age (their
// ts is t).
const trimLua = `
local n = redis.call('XLEN', log)
local nxt = tonumber(m[4])
local ageDue = nxt == nil or nxt <= t
if ageDue or n > maxEv or bytes > maxB then
  -- Walk from the oldest entry, dropping while a bound is exceeded; the
  -- entry just added is never dropped (its t is the newest, n > 1).
  local cutoff = t - maxAge
  local start, minid = '-', nil
  -- Only over the count bound (the steady state of a busy user): the
  -- entries to drop and the first one kept are all that is read.
  local count = 8
  if not ageDue and bytes <= maxB then count = math.min(8, n - maxEv + 1) end
  while true do
    local r = redis.call('XRANGE', log, start, '+', 'COUNT', count)
    for _, e in ipairs(r) do
      local et = tonumber(e[2][2])
      if n > maxEv or (bytes > maxB and n > 1) or (ageDue and et < cutoff) then
        n, bytes = n - 1, bytes - #e[2][4]
      else
        minid = e[1]
        if ageDue then nxt = et + maxAge end
        break
      end
    end
    if minid or #r < count then break end
    start, count = '(' .. r[#r][1], 8
  end
  if minid then redis.call('XTRIM', log, 'MINID', minid) end
end
`

// batchScript is the whole of AppendBatch, atomic per user: appendScript's
// steps for each record in turn, then one trim and one meta update.
//
// KEYS: 1 meta, 2 log, 3 live channel, then the idempotency keys of the
// records that have one.
// ARGV: 1 new epoch, 2 ts in µs, 3 MaxEvents, 4 MaxAge in µs, 5 key TTL in
// ms, 6 idempotency TTL in ms, 7 MaxBytes, 8 the number of records, then four
// per record: frame template, template bytes before the placeholder, offset
// after it, and the index in KEYS of its idempotency key (0: none).
//
// Returns {epoch, then two per record: seq and "" for a new event, seq and
// the first frame for an idempotent repeat}.
var batchScript = rueidis.NewLuaScript(`
local meta, log = KEYS[1], KEYS[2]
local m = redis.call('HMGET', meta, 'e', 'h', 't', 'n', 'b', 'r')
local epoch = m[1]
` + lineage + `
if epoch and m[6] == rid2 then
  -- written by the master this one replicated before its promotion
  -- (failover): new epoch, as in appendScript.
  epoch = nil
end
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', log)
  m = {epoch, nil, nil, nil, nil}
end
local head = tonumber(m[2]) or 0
local t = tonumber(ARGV[2])
local last = tonumber(m[3])
if last and last > t then t = last end
local ts = string.format('%d', t)
local bytes = tonumber(m[5]) or 0
local maxEv, maxAge, maxB = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[7])
local out, added = {epoch}, 0
for i = 0, tonumber(ARGV[8]) - 1 do
  local a = 9 + i * 4
  local k = tonumber(ARGV[a + 3])
  local d = nil
  if k > 0 then
    d = redis.call('HMGET', KEYS[k], 'e', 's', 'f')
    if d[1] ~= epoch then d = nil end
  end
  if d then
    out[#out + 1] = d[2]
    out[#out + 1] = d[3]
  else
    head, added = head + 1, added + 1
    local seqs = string.format('%d', head)
    local tpl = ARGV[a]
    local frame = string.sub(tpl, 1, tonumber(ARGV[a + 1])) .. ',"seq":' .. seqs .. ',"epoch":"' .. epoch .. '"' .. string.sub(tpl, tonumber(ARGV[a + 2]) + 1)
    redis.call('XADD', log, seqs .. '-0', 't', ts, 'f', frame)
    bytes = bytes + #frame
    if k > 0 then
      redis.call('HSET', KEYS[k], 'e', epoch, 's', seqs, 'f', frame)
      redis.call('PEXPIRE', KEYS[k], ARGV[6])
    end
    redis.call('SPUBLISH', KEYS[3], frame)
    out[#out + 1] = seqs
    out[#out + 1] = ''
  end
end
if added == 0 then return out end
` + trimLua + `
redis.call('HSET', meta, 'e', epoch, 'h', string.format('%d', head), 't', ts, 'n', string.format('%d', nxt), 'b', string.format('%d', bytes), 'r', rid)
redis.call('PEXPIRE', meta, ARGV[5])
redis.call('PEXPIRE', log, ARGV[5])
return out
`)

// readScript serves Head and Since. A user without meta gets one now (epoch
// ARGV[1], head 0, TTL ARGV[2] ms) so that the epoch Head reports is the one
// the first Append uses.
//
// KEYS: 1 meta, 2 log
// ARGV: 1 new epoch, 2 key TTL in ms, 3 since ("-1": position only),
// 4 the epoch the caller expects ("" for any), 5 age cutoff in µs,
// 6 max events, 7 max bytes (the first frame is returned whatever its size).
//
// Returns {epoch, head, frame…}: the retained frames with seq > since and
// t >= cutoff, oldest first, at most one page of them; none when the epoch
// differs or since >= head. The log is read in small chunks so that the
// script never holds much more than the page.
var readScript = rueidis.NewLuaScript(`
local m = redis.call('HMGET', KEYS[1], 'e', 'h', 'r')
local epoch, head = m[1], m[2] or '0'
` + lineage + `
if epoch and m[3] ~= rid and m[3] ~= rid2 then
  -- written before this master restarted (or in an older lineage it kept
  -- whole): its history is this master's now.
  redis.call('HSET', KEYS[1], 'r', rid)
end
if not epoch or m[3] == rid2 then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'e', epoch, 'h', '0', 'r', rid)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
  return {epoch, '0'}
end
local out = {epoch, head}
if ARGV[3] == '-1' or (ARGV[4] ~= '' and ARGV[4] ~= epoch) or tonumber(ARGV[3]) >= tonumber(head) then
  return out
end
local cutoff, maxN, maxB = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local start, n, size = '(' .. ARGV[3] .. '-0', 0, 0
while n < maxN do
  local chunk = math.min(maxN - n, 32)
  local r = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', chunk)
  for _, e in ipairs(r) do
    if tonumber(e[2][2]) >= cutoff then
      local f = e[2][4]
      if n > 0 and size + #f > maxB then return out end
      n, size = n + 1, size + #f
      out[#out + 1] = f
    end
  end
  if #r < chunk then break end
  start = '(' .. r[#r][1]
end
return out
`)

// lineage sets rid and rid2 from INFO replication of the master running the
// script: master_replid, its replication id, and master_replid2, the id of
// the master it replicated before a promotion (zeros when none). meta's field
// r keeps the rid under which the user's history was last written or read.
// A master's rid stays the same while it lives and is shared by its
// replicas; a replica promoted by a failover takes a new rid and keeps the
// old one as rid2. So r == rid2 means this master was promoted from the one
// that wrote the history, which may have delivered events it never
// replicated (replication is asynchronous): both scripts start a new epoch
// instead of continuing it, and clients resuming get resync_required
// (epoch_changed), never a silent gap under the old epoch. A master
// restarted in place also takes a new rid but its rid2 is zeros: its history
// is what it kept on disk, as before it had replicas, and r is just updated.
//
// The ids are found with plain string.find and read with a pattern anchored
// there, not by two unanchored string.match scans of the whole section:
// 12 µs instead of 16 for INFO and both ids, on every append and read
// (redis-benchmark EVAL, Redis 7.0).
const lineage = `local info = redis.call('INFO', 'replication')
local p = string.find(info, 'master_replid:', 1, true)
local rid = p and string.match(info, '^%w+', p + 14) or ''
local q = string.find(info, 'master_replid2:', 1, true)
local rid2 = q and string.match(info, '^%w+', q + 15) or ''`
