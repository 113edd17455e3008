-- The fetch script of src/cluster/log.rs (its KEYS, ARGV and answer are
-- documented there, on FETCH).
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local max_age = tonumber(ARGV[4])
local ttl = math.max(max_age, 1000)
local state = redis.call('HMGET', KEYS[1], 'e', 's')
local epoch = state[1]
if not epoch then
  epoch = time[1] .. string.format('%06d', tonumber(time[2]))
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('PEXPIRE', KEYS[1], ttl + math.floor(ttl / 4))
  redis.call('DEL', KEYS[2])
  state[2] = nil
end
local head = state[2] or '0'
if ARGV[1] == 'since' and ARGV[2] == epoch and tonumber(ARGV[3]) > tonumber(head) then
  -- A node delivered more than this log has: it went back in time. Number
  -- past it (and say so in the fence), so no delivered id is given again.
  head = string.format('%d', tonumber(head) + tonumber(ARGV[5]))
  redis.call('HSET', KEYS[1], 's', head)
  redis.set_repl(redis.REPL_AOF)
  redis.call('HSET', KEYS[1], 'f', head)
  redis.set_repl(redis.REPL_ALL)
end
local out = {epoch, head}
if ARGV[1] == 'head' then return out end
local start = '-'
if (ARGV[1] == 'after' or ARGV[1] == 'since') and ARGV[2] == epoch
  and tonumber(ARGV[3]) <= tonumber(head) then
  start = '(' .. ARGV[3] .. '-0'
end
local cutoff = now_ms - max_age
local fresh = false
local most = tonumber(ARGV[6] or '0')
local max_bytes = tonumber(ARGV[7] or '0')
local taken, bytes = 0, 0
local batch_size = 128
if most == 0 and max_bytes == 0 then batch_size = 0 end
local cursor = start
while true do
  local batch
  if batch_size > 0 then
    batch = redis.call('XRANGE', KEYS[2], cursor, '+', 'COUNT', batch_size)
  else
    batch = redis.call('XRANGE', KEYS[2], cursor, '+')
  end
  for _, entry in ipairs(batch) do
    local f = entry[2]
    if fresh or tonumber(f[2]) >= cutoff then
      fresh = true
      if (most > 0 and taken >= most) or (max_bytes > 0 and bytes > max_bytes) then
        return out
      end
      local seq = string.sub(entry[1], 1, string.find(entry[1], '-', 1, true) - 1)
      table.insert(out, seq)
      table.insert(out, f[2])
      table.insert(out, f[4])
      table.insert(out, f[6])
      taken = taken + 1
      bytes = bytes + #f[6]
    end
  end
  if batch_size == 0 or #batch < batch_size then return out end
  cursor = '(' .. batch[#batch][1]
end
