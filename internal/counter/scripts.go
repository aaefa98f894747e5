package counter

import goredis "github.com/redis/go-redis/v9"

// The Redis layout (docs/COUNTERS.md). P is Options.RedisPrefix + ":ctr:"
// ("cellar:ctr:" by default). Per logical shard s, on the node that holds s:
//
//	P{s}:durable      hash key -> the node's durable value, for keys in use
//	P{s}:deltas       hash key -> increments not yet in a flush
//	P{s}:flush:<id>   hash key -> delta, the deltas of flush <id>
//	P{s}:flushing     set of the flush IDs holding deltas of s
//	P{s}:gen          bumped whenever a flush of s finishes
//	P{s}:dpair        the storage node whose pair's epoch names the
//	                  deltas hash (the shard's when it was created)
//
// Per node:
//
//	Pflush:<id>       hash: shards (comma-separated), owner,
//	                  rej:<key> -> delta for deltas set aside
//	Prejected         list of deltas set aside (JSON)
//	Prunid:pairs      run_id:master_replid of the server that last took
//	                  increments (not Prunid, which the code before pairs
//	                  sets after sealing the unnamed pair alone)
//	Ppairs            set of the storage nodes with keys of their own
//	                  (below)
//
// Per node and storage node X, under the pair's prefix Q (keyspace.pair:
// P itself for X "", the whole buffer over a CounterNode that does not
// name storage nodes, and the layout before pairs; else Pn:X:), so that
// a storage node that is down holds back only its own counters' flushes:
//
//	Qpending          set of shards with a deltas hash
//	Qflushes          sorted set: flush ID -> lease deadline (Unix ms)
//	Qepoch            the name of the deltas buffered now: the ID of the
//	                  flush that will take them
//
// A shard is on one storage node, so its deltas belong to one pair.
//
// Invariant: a key has a durable entry whenever a flush in progress holds
// a delta of it. So a key without one has nothing in flight, and a value
// read from the node for it is current unless a flush of its shard
// finished meanwhile (gen changed).
//
// Lua numbers are doubles, so values travel as strings and the scripts
// add them as doubles only where doubles are exact; larger sums are made
// exactly in parts (luaTotal), and a delta field with HINCRBY, which
// refuses to overflow.
//
// The scripts reach keys built from P and the shard number besides their
// KEYS (P comes as an argument); that is fine on the standalone servers
// cellar uses (each named node is one server, not a Redis Cluster).

// keyspace names the buffer's Redis keys under its prefix.
type keyspace string

func newKeyspace(redisPrefix string) keyspace { return keyspace(redisPrefix + ":ctr:") }

func (k keyspace) rejected() string { return string(k) + "rejected" }
func (k keyspace) pairs() string    { return string(k) + "pairs" }

// pair is the prefix of the keys of storage node node's counters, as
// luaPair makes it.
func (k keyspace) pair(node string) pairspace {
	if node == "" {
		return pairspace(k)
	}
	return pairspace(string(k) + "n:" + node + ":")
}

// pairspace names the keys of one storage node's counters on a Redis node.
type pairspace string

func (q pairspace) flushes() string { return string(q) + "flushes" }

// flushRecord is flush id's record.
func (k keyspace) flushRecord(id string) string { return string(k) + "flush:" + id }

// shardFlush is flush id's deltas of shard s.
func (k keyspace) shardFlush(s, id string) string { return string(k) + "{" + s + "}:flush:" + id }

// luaTotal defines total(vals): the exact sum of the decimal strings in
// vals (false entries, for missing fields, count as nothing) as a decimal
// string, or nil if it is out of the range of int64. Up to nine values of
// at most 15 characters (|v| < 10^15) sum below 2^53, where doubles are
// exact, so Lua adds them as they are. Otherwise each value is split at
// its ninth digit from the right into a high part (|h| < 10^10) and a low
// one (|l| < 10^9), of the value's sign; the parts are summed apart, which
// stays exact in doubles for any number of values the scripts pass, and
// the result, normalized to a low part in [0, 10^9), is compared with the
// bounds of int64 and written out. It writes nothing to Redis: a read
// works while the node refuses writes (out of memory, a failed save, too
// few replicas), and no partial sum can be refused on the way, whatever
// order the values come in.
const luaTotal = `
local function total(vals)
  local present = {}
  local small = true
  for i = 1, #vals do
    local v = vals[i]
    if v then
      present[#present + 1] = v
      small = small and #v <= 15
    end
  end
  if small and #present <= 9 then
    local t = 0
    for _, v in ipairs(present) do
      t = t + tonumber(v)
    end
    return string.format('%.0f', t)
  end
  local hi, lo = 0, 0
  for _, v in ipairs(present) do
    local sign, digits = 1, v
    if string.sub(v, 1, 1) == '-' then
      sign, digits = -1, string.sub(v, 2)
    end
    local n = #digits
    if n > 9 then
      hi = hi + sign * tonumber(string.sub(digits, 1, n - 9))
      lo = lo + sign * tonumber(string.sub(digits, n - 8))
    else
      lo = lo + sign * tonumber(digits)
    end
  end
  local l = lo % 1000000000 -- in [0, 10^9): Lua's % floors
  if l < 0 then -- in case the quotient it floors was rounded
    l = l + 1000000000
  elseif l >= 1000000000 then
    l = l - 1000000000
  end
  local h = hi + (lo - l) / 1000000000
  -- int64 runs from -9223372037*10^9 + 145224192 to 9223372036*10^9 + 854775807.
  if h > 9223372036 or (h == 9223372036 and l > 854775807) or h < -9223372037 or (h == -9223372037 and l < 145224192) then
    return nil
  end
  if h >= 0 then
    if h == 0 then
      return string.format('%d', l)
    end
    return string.format('%d%09d', h, l)
  end
  -- Negative: its magnitude is -h*10^9 - l.
  local mh, ml = -h, 0
  if l > 0 then
    mh, ml = -h - 1, 1000000000 - l
  end
  if mh == 0 then
    return string.format('-%d', ml)
  end
  return string.format('-%d%09d', mh, ml)
end
`

// luaPair defines pair(P, X), the prefix of storage node X's keys
// (keyspace.pair), and freshOf(fresh, X), the fresh epoch of X's pair
// from a script's fresh one (distinct per pair).
const luaPair = `
local function pair(P, X)
  if X == '' then
    return P
  end
  return P .. 'n:' .. X .. ':'
end
local function freshOf(fresh, X)
  if X == '' then
    return fresh
  end
  return fresh .. '.' .. X
end
`

// luaSeal defines seal(P, Q, X, fresh, owner, deadline): it starts a
// flush of every pending shard's deltas of storage node X's pair (keys
// under Q) in one atomic step (RENAME of each deltas
// hash to the flush's hash), so an increment lands either in this flush or
// in a later one, never in both or neither. The flush's ID is the epoch's,
// the name the deltas have carried since the flush before (derived from
// fresh if there is none yet); the epoch becomes fresh. The flush is recorded with owner
// and lease deadline. Returns the ID and the shards taken (none: no flush,
// and the epoch stays).
//
// Naming a flush after its epoch is what makes a Redis that comes back
// with older data harmless (docs/COUNTERS.md): deltas that a flush had
// taken and applied reappear under the epoch they had, so the flush that
// takes them again has the same ID, and the storage node, which records
// the IDs it applied, does not apply them twice.
const luaSeal = `
local function seal(P, Q, X, fresh, owner, deadline)
  -- Without an epoch yet (a new or emptied server), the deltas get a name
  -- of their own, distinct from the next epoch's.
  local id = redis.call('GET', Q .. 'epoch') or ('x' .. fresh)
  local taken = {}
  for _, s in ipairs(redis.call('SMEMBERS', Q .. 'pending')) do
    local p = P .. '{' .. s .. '}:'
    if redis.call('EXISTS', p .. 'deltas') == 1 then
      -- Deltas first written for another pair (the shard has moved
      -- since) carry that pair's epoch: it takes them, whichever pair
      -- lists the shard, so that they are named alike however often
      -- they are sealed (a Redis back from older data seals them again).
      local o = redis.call('GET', p .. 'dpair')
      if not o or o == X then
        redis.call('RENAME', p .. 'deltas', p .. 'flush:' .. id)
        redis.call('DEL', p .. 'dpair')
        redis.call('SADD', p .. 'flushing', id)
        taken[#taken + 1] = s
      else
        redis.call('SADD', pair(P, o) .. 'pending', s)
      end
    end
  end
  redis.call('DEL', Q .. 'pending')
  if #taken > 0 then
    redis.call('HSET', P .. 'flush:' .. id, 'shards', table.concat(taken, ','), 'owner', owner)
    redis.call('ZADD', Q .. 'flushes', deadline, id)
    redis.call('SET', Q .. 'epoch', fresh)
  end
  return id, taken
end
`

// incrScript runs a batch of increments, in order, each as if alone: it
// adds by to counter key of shard if the result stays in range. A key
// without a durable entry needs one first: the item's answer is {"load",
// gen}; the caller reads the node and sends the item again with the value
// (loaded) and that gen, which the script installs only if no flush of
// the shard finished meanwhile. ARGV[1] seeds gen on first use with a
// random number, so that a restarted (emptied) server does not repeat gens
// a caller may have seen.
//
// First, if the server is not the one that took the last increments (its
// run_id and replication ID differ: a restart, a restore, a failover, a
// master that became a replica and back), it seals the deltas
// that came back with the data (luaSeal, with ARGV[3] as the next epoch)
// into a flush that any process may run at once, before this batch adds
// to them: should they come from an epoch a flush already applied, that
// flush's ID now names them, and they are not applied twice, while this
// batch's increments go to the new epoch. INFO costs the script about
// 10-15 µs; it runs once a batch.
//
// The items of a storage node X go to the keys of its pair (keyspace.pair):
// its pending set, and the epoch that names them, set before the first of
// them is written. The seal on a new server seals every pair's deltas.
//
// ARGV: seed, P, a fresh epoch, then per item key, by, shard, loaded (or
// ""), gen, and the storage node X of the key ("" for a CounterNode that
// does not name them). Answers one {"ok", value}, {"overflow"} or {"load",
// gen} per item.
var incrScript = goredis.NewScript(luaTotal + luaPair + luaSeal + `
local P = ARGV[2]
local info = redis.call('INFO', 'server', 'replication')
local rid = string.match(info, 'run_id:(%x+)')
if rid then
  rid = rid .. ':' .. (string.match(info, 'master_replid:(%x+)') or '')
end
if rid and redis.call('GET', P .. 'runid:pairs') ~= rid then
  local xs = redis.call('SMEMBERS', P .. 'pairs')
  table.insert(xs, 1, '')
  for _, x in ipairs(xs) do
    local Q, f = pair(P, x), freshOf(ARGV[3], x)
    seal(P, Q, x, f, '', 0)
    -- A new epoch even if nothing came back: the one in the data may be
    -- one a flush already applied.
    redis.call('SET', Q .. 'epoch', f)
  end
  redis.call('SET', P .. 'runid:pairs', rid)
end
-- The deltas of a pair are named before any is written, so that a
-- snapshot holding them holds their name.
local named = {}
local function name(x)
  local Q = named[x]
  if not Q then
    Q = pair(P, x)
    named[x] = Q
    -- A pair is listed when its epoch is first set: the two are written
    -- together, so a pair with an epoch is listed.
    if redis.call('SET', Q .. 'epoch', freshOf(ARGV[3], x), 'NX') and x ~= '' then
      redis.call('SADD', P .. 'pairs', x)
    end
  end
  return Q
end
-- A key seen earlier in the batch, whose total and delta field are small,
-- is added to in Lua (run[]): doubles are exact below 2^53, and its answer
-- and field are what the full path would make of them, without reading
-- the key's hashes again. The field is written when the run ends: before
-- an item of the key that takes the full path, and after the last item.
-- SMALL = 2^52: two numbers below it add up exactly, below 2^53.
local SMALL = 4503599627370496
local run = {}
local function small(x)
  return x > -SMALL and x < SMALL
end
local function fmt(x)
  if x == 0 then
    return '0' -- never '-0'
  end
  return string.format('%.0f', x)
end
local function write(r)
  if r.dirty then
    redis.call('HSET', r.deltas, r.key, fmt(r.field))
    r.dirty = false
  end
end
local out = {}
for i = 4, #ARGV, 6 do
  local key, by, shard = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local Q = name(ARGV[i + 5])
  local id = shard .. ':' .. key -- a shard number has no ':'
  local r = run[id]
  -- tonumber rounds correctly: a value it reads as small is exact.
  local b = string.match(by, '^-?%d+$') and tonumber(by)
  if r and b and small(b) and small(r.total + b) and small(r.field + b) then
    r.total, r.field, r.dirty = r.total + b, r.field + b, true
    out[#out + 1] = {'ok', fmt(r.total)}
  else
    if r then
      write(r)
      run[id] = nil
    end
    local p = P .. '{' .. shard .. '}:'
    local durable, deltas = p .. 'durable', p .. 'deltas'
    local d = redis.call('HGET', durable, key)
    local loaded = false
    local res
    if not d then
      local g = redis.call('GET', p .. 'gen')
      if not g then
        g = ARGV[1]
        redis.call('SET', p .. 'gen', g)
      end
      if ARGV[i + 3] == '' or g ~= ARGV[i + 4] then
        res = {'load', g}
      else
        d = ARGV[i + 3]
        redis.call('HSET', durable, key, d)
        loaded = true
      end
    end
    if not res then
      local vals = {d}
      for _, fid in ipairs(redis.call('SMEMBERS', p .. 'flushing')) do
        vals[#vals + 1] = redis.call('HGET', p .. 'flush:' .. fid, key)
      end
      vals[#vals + 1] = redis.call('HGET', deltas, key)
      vals[#vals + 1] = by
      local v = total(vals)
      local field
      -- The pair whose epoch names the shard's deltas: the one they were
      -- first written for (the shard's storage node then), kept in dpair
      -- until a seal takes them.
      local owner = ARGV[i + 5]
      if v then
        if redis.call('EXISTS', deltas) == 0 then
          redis.call('SET', p .. 'dpair', owner)
        else
          owner = redis.call('GET', p .. 'dpair') or owner
        end
        field = redis.pcall('HINCRBY', deltas, key, by)
        if type(field) == 'table' and field.err then
          -- Only an overflow is this item's answer. Any other error is
          -- Redis refusing the script's first write (out of memory,
          -- read-only, a failed save: it checks those until a script has
          -- written), so nothing of the batch is written; fail it whole.
          -- (Data in these keys that is not cellar's fails the script
          -- whole too, at its reads, before or after earlier items wrote.)
          if not string.find(field.err, 'would overflow', 1, true) then
            return redis.error_reply(field.err)
          end
          v = nil
        end
      end
      if v then
        redis.call('SADD', pair(P, owner) .. 'pending', shard)
        res = {'ok', v}
        -- HINCRBY's reply is a Lua number, exact while small.
        local t = tonumber(v)
        if small(t) and small(field) then
          run[id] = {total = t, field = field, deltas = deltas, key = key, dirty = false}
        end
      else
        if loaded then
          redis.call('HDEL', durable, key)
        end
        res = {'overflow'}
      end
    end
    out[#out + 1] = res
  end
end
for _, r in pairs(run) do
  write(r)
end
return out
`)

// readScript returns, for each (shard, key) pair in ARGV, the counter's
// value: durable entry + flushes in progress + deltas, as a string; ""
// for a key without a durable entry (nothing of it is buffered here: the
// node's value is the answer), "!" if the sum is out of range.
//
// ARGV: P, then the pairs.
//
// It is run read-only (EVALSHA_RO, Redis 7), so that the node runs it
// while it holds writes back (CLIENT PAUSE WRITE, as a failover does),
// which holds back every EVALSHA, writing or not.
var readScript = goredis.NewScript(luaTotal + `
local out = {}
for i = 2, #ARGV, 2 do
  local p = ARGV[1] .. '{' .. ARGV[i] .. '}:'
  local k = ARGV[i + 1]
  local d = redis.call('HGET', p .. 'durable', k)
  if not d then
    out[#out + 1] = ''
  else
    local vals = {d}
    for _, id in ipairs(redis.call('SMEMBERS', p .. 'flushing')) do
      vals[#vals + 1] = redis.call('HGET', p .. 'flush:' .. id, k)
    end
    vals[#vals + 1] = redis.call('HGET', p .. 'deltas', k)
    out[#out + 1] = total(vals) or '!'
  end
end
return out
`)

// beginScript starts a flush of the deltas of storage node ARGV[5]'s pair
// buffered now (luaSeal), owned by ARGV[3] until ARGV[2], and returns its
// ID followed by the shards taken (the ID alone: nothing to flush).
//
// ARGV: a fresh epoch, deadline, owner, P, X.
var beginScript = goredis.NewScript(luaPair + luaSeal + `
local id, taken = seal(ARGV[4], pair(ARGV[4], ARGV[5]), ARGV[5], freshOf(ARGV[1], ARGV[5]), ARGV[3], ARGV[2])
table.insert(taken, 1, id)
return taken
`)

// claimScript takes flush ARGV[1] for owner ARGV[4] until ARGV[3] if its
// lease ran out by ARGV[2] or the owner already holds it (renewal), and
// returns its shards (comma-separated); nil if it is finished or someone
// else holds it.
//
// KEYS: the pair's flushes, the flush's record.
var claimScript = goredis.NewScript(`
local sc = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not sc then
  return false
end
local m = redis.call('HMGET', KEYS[2], 'shards', 'owner')
if not m[1] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return false
end
if tonumber(sc) > tonumber(ARGV[2]) and m[2] ~= ARGV[4] then
  return false
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], 'owner', ARGV[4])
return m[1]
`)

// finishScript ends flush ARGV[1] once the node confirmed it: the applied
// deltas move into the durable entries of keys still in use (the entries
// of idle keys are dropped, so memory follows the keys in use), the
// deltas set aside go to the rejected list, and the flush's hashes and
// record are deleted. gen is bumped for each of its shards (seeded with
// ARGV[2] if the server lost it). Finishing a finished flush does nothing.
//
// KEYS: the pair's flushes, the flush's record, rejected. ARGV: id, seed, P.
var finishScript = goredis.NewScript(`
local id = ARGV[1]
local shards = redis.call('HGET', KEYS[2], 'shards')
if not shards then
  redis.call('ZREM', KEYS[1], id)
  return 0
end
local rej = {}
local meta = redis.call('HGETALL', KEYS[2])
for i = 1, #meta, 2 do
  if string.sub(meta[i], 1, 4) == 'rej:' then
    rej[string.sub(meta[i], 5)] = true
  end
end
for s in string.gmatch(shards, '[^,]+') do
  local p = ARGV[3] .. '{' .. s .. '}:'
  local fk = p .. 'flush:' .. id
  redis.call('SREM', p .. 'flushing', id)
  local others = redis.call('SMEMBERS', p .. 'flushing')
  local kv = redis.call('HGETALL', fk)
  for i = 1, #kv, 2 do
    local k, d = kv[i], kv[i + 1]
    local busy = redis.call('HEXISTS', p .. 'deltas', k) == 1
    for _, o in ipairs(others) do
      if busy then
        break
      end
      busy = redis.call('HEXISTS', p .. 'flush:' .. o, k) == 1
    end
    if rej[k] then
      redis.call('RPUSH', KEYS[3], cjson.encode({flush = id, shard = s, key = k, delta = d}))
    elseif busy then
      redis.pcall('HINCRBY', p .. 'durable', k, d)
    end
    if not busy then
      redis.call('HDEL', p .. 'durable', k)
    end
  end
  redis.call('DEL', fk)
  if redis.call('EXISTS', p .. 'gen') == 1 then
    redis.call('INCR', p .. 'gen')
  else
    redis.call('SET', p .. 'gen', ARGV[2])
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], id)
return 1
`)
