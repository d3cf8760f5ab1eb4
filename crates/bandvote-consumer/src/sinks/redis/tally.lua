-- Applies one batch of votes from one Kafka partition to the live counters, atomically, exactly once.
--
-- KEYS: votes:offsets, votes:offsets:marks, votes:band, votes:album, votes:total, votes:last,
--       votes:timeline, votes:sealed, votes:late (bandvote_store::keys, in that order)
-- ARGV[1]  the partition's field in votes:offsets ("<topic>:<partition>")
-- ARGV[2]  the batch's first offset          ARGV[3]  the batch's last offset
-- ARGV[4]  the partition's first offset (expected when no offset is stored yet)
-- ARGV[5]  counted_at (RFC 3339)             ARGV[6]  idempotency-key memory, seconds
-- ARGV[7]  newest received_at among the votes without a client key ('' if none)
-- ARGV[8]  the fingerprint of the batch's last record, stored in votes:offsets:marks
-- ARGV[9]  a stored offset of a queue since reset ('' if none): if it is still the stored one, it is
--          forgotten, and the batch must start at the partition's first offset
-- ARGV[10] G, the number of aggregated groups that follow
-- ARGV[11] the prefix of the idempotency-key markers ("votes:seen:")
-- ARGV[12] the prefix of the rounds' counters ("votes:round:")
-- then G quadruples (round, band, "<band> / <album>", count) for the default round's votes without a
-- client key, then sextuples (keyed '1' or '0', id, round, band, album, received_at) for the others.
-- Each round but `default` (whose counters are the all-time ones) has its own counters beside:
-- votes:round:<id>:band, :album and :total, updated in this same step.
--
-- A round in votes:sealed is final: a vote for it that is not a retry of a counted key is set aside
-- in votes:late (id -> "<round>\n<band>\n<album>") and counted nowhere, not even in the all-time
-- counters; the seal is written by the finality check between two batches, never inside one.
--
-- The batch is applied only if it continues the stored offset; otherwise nothing is written and the
-- answer is {0, stored offset or -1, stored fingerprint or ''}.
-- Applied: {1, counted, duplicates, total, set aside as late}.

local offsets, marks, band_counts, album_counts, total_key, last_key, timeline, sealed_key, late_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local field = ARGV[1]
local first = tonumber(ARGV[2])
local stored = redis.call('HGET', offsets, field)
if stored and ARGV[9] ~= '' and tonumber(stored) == tonumber(ARGV[9]) then
  stored = nil
end
if stored then
  if tonumber(stored) + 1 ~= first then
    return {0, tonumber(stored), redis.call('HGET', marks, field) or ''}
  end
elseif first ~= tonumber(ARGV[4]) then
  return {0, -1, ''}
end

local bands, albums, rounds = {}, {}, {}
local counted, duplicates, late = 0, 0, 0
local newest = ARGV[7]

local sealed = {default = false}
local function is_sealed(round)
  if sealed[round] == nil then
    sealed[round] = redis.call('HEXISTS', sealed_key, round) == 1
  end
  return sealed[round]
end

local function set_aside(id, round, band, album)
  late = late + redis.call('HSETNX', late_key, id, round .. '\n' .. band .. '\n' .. album)
end

local function add(round, band, album, n)
  bands[band] = (bands[band] or 0) + n
  albums[album] = (albums[album] or 0) + n
  counted = counted + n
  if round ~= 'default' then
    local r = rounds[round]
    if not r then
      r = {bands = {}, albums = {}, total = 0}
      rounds[round] = r
    end
    r.bands[band] = (r.bands[band] or 0) + n
    r.albums[album] = (r.albums[album] or 0) + n
    r.total = r.total + n
  end
end

local i = 13
for _ = 1, tonumber(ARGV[10]) do
  if ARGV[i] ~= 'default' then
    return redis.error_reply('only the default round is aggregated')
  end
  add(ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]))
  i = i + 4
end

local ttl = ARGV[6]
while i <= #ARGV do
  local keyed, id, round, band = ARGV[i] == '1', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local album, received = ARGV[i + 4], ARGV[i + 5]
  local seen = ARGV[11] .. id
  if is_sealed(round) then
    if keyed and redis.call('EXISTS', seen) == 1 then
      duplicates = duplicates + 1
    else
      set_aside(id, round, band, album)
    end
  elseif (not keyed) or redis.call('SET', seen, '1', 'NX', 'EX', ttl) then
    add(round, band, band .. ' / ' .. album, 1)
    if received > newest then newest = received end
  else
    duplicates = duplicates + 1
  end
  i = i + 6
end

for band, n in pairs(bands) do redis.call('HINCRBY', band_counts, band, n) end
for album, n in pairs(albums) do redis.call('HINCRBY', album_counts, album, n) end
for round, r in pairs(rounds) do
  local prefix = ARGV[12] .. round
  for band, n in pairs(r.bands) do redis.call('HINCRBY', prefix .. ':band', band, n) end
  for album, n in pairs(r.albums) do redis.call('HINCRBY', prefix .. ':album', album, n) end
  redis.call('INCRBY', prefix .. ':total', r.total)
end
local total = redis.call('INCRBY', total_key, counted)
if counted > 0 then
  local last = redis.call('HGET', last_key, 'received_at')
  if (not last) or newest > last then
    redis.call('HSET', last_key, 'received_at', newest, 'counted_at', ARGV[5])
  end
  redis.call('XADD', timeline, 'MAXLEN', '~', '100000', '*', 'n', counted, 'total', total)
end
redis.call('HSET', offsets, field, ARGV[3])
redis.call('HSET', marks, field, ARGV[8])
return {1, counted, duplicates, total, late}
