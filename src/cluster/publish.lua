-- The publish script of src/cluster/log.rs (its KEYS, ARGV and answer are
-- documented there, on PUBLISH).
local count = (#ARGV - 9) / 4
local answers = {}
local stored = {}
local first_of = {}
for i = 0, count - 1 do
  local at = 10 + 4 * i
  local k = tonumber(ARGV[at + 2])
  local answer = ''
  if k > 0 then
    local digest = ARGV[at + 3]
    local earlier = first_of[KEYS[k]]
    if earlier then
      -- The same key twice in one call: the second repeats the first.
      if earlier[1] == digest then answer = earlier[2] else answer = 'x' end
    else
      local known = redis.call('GET', KEYS[k])
      if known then
        local d, e, s = string.match(known, '^(%x+) (%d+) (%d+)$')
        if d == digest then
          answer = 'r ' .. e .. ' ' .. s
          redis.call('SET', KEYS[k], known, 'KEEPTTL')
        else
          answer = 'x'
        end
      end
    end
  end
  if answer == '' then
    stored[#stored + 1] = at
    if k > 0 then first_of[KEYS[k]] = {ARGV[at + 3], #stored} end
  end
  answers[#answers + 1] = answer
end
if #stored == 0 then
  local out = {'', '0'}
  for _, answer in ipairs(answers) do out[#out + 1] = answer end
  return out
end
-- Numbers reach Redis and the bus as text made here with '%d' (or taken
-- from ARGV as sent): Lua's own number-to-text conversion formats floats,
-- which was the script's largest single cost.
local time = redis.call('TIME')
local ms = math.floor(tonumber(time[2]) / 1000)
local now_ms = tonumber(time[1]) * 1000 + ms
local now_text = time[1] .. string.format('%03d', ms)
local max_events = tonumber(ARGV[4])
local max_age = tonumber(ARGV[5])
local ttl = math.max(max_age, 1000)
-- The channel's state: epoch, seq, fence and when its TTLs were set last.
local state = redis.call('HMGET', KEYS[1], 'e', 's', 'f', 'x')
local epoch, seq = state[1], tonumber(state[2] or '0')
local refreshed = tonumber(state[4] or '0')
local fields = {}
if not epoch then
  epoch = time[1] .. string.format('%06d', tonumber(time[2]))
  fields = {'e', epoch}
  seq, refreshed = 0, 0
  redis.call('DEL', KEYS[2])
elseif (state[2] and state[3] ~= state[2])
  or (ARGV[7] == epoch and seq < tonumber(ARGV[8])) then
  -- Another server wrote this channel last, or this one lost events a
  -- node delivered: do not reuse their seqs.
  seq = seq + tonumber(ARGV[6])
end
local first = seq + 1
local last = seq + #stored
local last_text = string.format('%d', last)
fields[#fields + 1] = 's'
fields[#fields + 1] = last_text
-- Keys of a channel silent for longer than its history age go away: the
-- TTLs are set a quarter longer than that age, and set again only once a
-- quarter of it has passed (not on every publish).
local refresh = now_ms - refreshed > ttl / 4
if refresh then
  fields[#fields + 1] = 'x'
  fields[#fields + 1] = now_text
end
redis.call('HSET', KEYS[1], unpack(fields))
local message = {ARGV[3], epoch, string.format('%d', first), now_text,
  string.format('%d', #stored)}
for i, at in ipairs(stored) do
  local seq = string.format('%d', first + i - 1)
  local event_type, data = ARGV[at], ARGV[at + 1]
  if max_events > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4],
      seq .. '-0', 't', now_text, 'e', event_type, 'd', data)
  end
  local k = tonumber(ARGV[at + 2])
  if k > 0 then
    redis.call('SET', KEYS[k], ARGV[at + 3] .. ' ' .. epoch .. ' ' .. seq, 'PX', ARGV[9])
  end
  message[#message + 1] = event_type
  message[#message + 1] = string.format('%d', #data)
  message[#message + 1] = data
end
if max_events > 0 and math.floor(last / 16) ~= math.floor((first - 1) / 16) then
  -- Age retention, every 16th seq (each redis.call costs; reads skip stale
  -- entries anyway): the oldest entry decides whether a bounded trim is due.
  local cutoff = now_ms - max_age
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #oldest > 0 and tonumber(oldest[1][2][2]) < cutoff then
    local batch = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 256)
    local keep = nil
    for _, entry in ipairs(batch) do
      if tonumber(entry[2][2]) >= cutoff then keep = entry[1] break end
    end
    if keep then redis.call('XTRIM', KEYS[2], 'MINID', keep) end
  end
end
if refresh then
  local lifetime = string.format('%d', ttl + math.floor(ttl / 4))
  redis.call('PEXPIRE', KEYS[1], lifetime)
  redis.call('PEXPIRE', KEYS[2], lifetime)
end
-- The fence: this server wrote the channel last (never replicated).
redis.set_repl(redis.REPL_AOF)
redis.call('HSET', KEYS[1], 'f', last_text)
redis.set_repl(redis.REPL_ALL)
redis.call(ARGV[1], ARGV[2], table.concat(message, '\n'))
local out = {epoch, string.format('%d', first)}
for _, answer in ipairs(answers) do
  if type(answer) == 'number' then
    answer = 'r ' .. epoch .. ' ' .. string.format('%d', first + answer - 1)
  end
  out[#out + 1] = answer
end
return out
