-- Applies one batch of votes from one Kafka partition to the live counters, atomically, exactly once.
--
-- ARGV[1]  the partition's field in votes:offsets ("<topic>:<partition>")
-- ARGV[2]  the batch's first offset          ARGV[3]  the batch's last offset
-- ARGV[4]  the partition's first offset (expected when no offset is stored yet)
-- ARGV[5]  counted_at (RFC 3339)             ARGV[6]  idempotency-key memory, seconds
-- ARGV[7]  newest received_at among the votes without a client key ('' if none)
-- ARGV[8]  G, the number of aggregated groups that follow
-- then G triples (band, "<band> / <album>", count) for votes without a client key,
-- then quadruples (id, band, "<band> / <album>", received_at) for votes with a client key.
--
-- The batch is applied only if it continues the stored offset; otherwise nothing is written and the
-- answer is {0, stored offset or -1}. Applied: {1, counted, duplicates, total}.

local field = ARGV[1]
local first = tonumber(ARGV[2])
local stored = redis.call('HGET', 'votes:offsets', field)
if stored then
  if tonumber(stored) + 1 ~= first then
    return {0, tonumber(stored)}
  end
elseif first ~= tonumber(ARGV[4]) then
  return {0, -1}
end

local bands, albums = {}, {}
local counted, duplicates = 0, 0
local newest = ARGV[7]

local i = 9
for _ = 1, tonumber(ARGV[8]) do
  local n = tonumber(ARGV[i + 2])
  bands[ARGV[i]] = (bands[ARGV[i]] or 0) + n
  albums[ARGV[i + 1]] = (albums[ARGV[i + 1]] or 0) + n
  counted = counted + n
  i = i + 3
end

local ttl = ARGV[6]
while i <= #ARGV do
  if redis.call('SET', 'votes:seen:' .. ARGV[i], '1', 'NX', 'EX', ttl) then
    bands[ARGV[i + 1]] = (bands[ARGV[i + 1]] or 0) + 1
    albums[ARGV[i + 2]] = (albums[ARGV[i + 2]] or 0) + 1
    counted = counted + 1
    if ARGV[i + 3] > newest then newest = ARGV[i + 3] end
  else
    duplicates = duplicates + 1
  end
  i = i + 4
end

for band, n in pairs(bands) do redis.call('HINCRBY', 'votes:band', band, n) end
for album, n in pairs(albums) do redis.call('HINCRBY', 'votes:album', album, n) end
local total = redis.call('INCRBY', 'votes:total', counted)
if counted > 0 then
  local last = redis.call('HGET', 'votes:last', 'received_at')
  if (not last) or newest > last then
    redis.call('HSET', 'votes:last', 'received_at', newest, 'counted_at', ARGV[5])
  end
  redis.call('XADD', 'votes:timeline', 'MAXLEN', '~', '100000', '*', 'n', counted, 'total', total)
end
redis.call('HSET', 'votes:offsets', field, ARGV[3])
return {1, counted, duplicates, total}
