"""The Lua scripts of the Redis projection (shared.redis_view): each runs atomically in Redis."""

APPLY_CHUNK = 500
"""Updates per APPLY call: one call costs far less than 500 commands, and blocks Redis ~ms."""

TENANT_KEYS = """
local function tenant_root(root, tenant)
  if tenant == 'default' then return root end
  return root .. ':t:' .. tenant
end
local function expiring_member(tenant, status, jtype, jid)
  local member = status .. '|' .. jtype .. '|' .. jid
  if tenant == 'default' then return member end
  return '@' .. tenant .. '|' .. member
end
"""
"""Where a tenant's list indexes live: the default tenant's under the generation's root (where
every job's were before tenants existed), another tenant's under ``<root>:t:<tenant>``; the
``expiring`` member of a final job names its tenant the same way (``@<tenant>|`` first)."""

APPLY = (
    TENANT_KEYS
    + """
local guard, ttl, root, position = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[5]
if guard ~= '*' and (redis.call('GET', KEYS[1]) or '') ~= guard then return {-2} end
if ARGV[6] ~= '' and (redis.call('GET', KEYS[2]) or '0') ~= ARGV[6] then return {-3} end
local counts = root .. ':counts'
local now_ms = nil
local function passed(deadline)
  if not now_ms then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return deadline <= now_ms
end
local function apply(jid, vtext, mode, fields, at, hint, ends)
  local key = root .. ':job:' .. jid
  local version = tonumber(vtext)
  local cur = redis.call('HMGET', key, 'version', 'status', 'type', 'created_ms', 'tenant')
  if cur[1] then
    local have = tonumber(cur[1])
    if have > version or (have == version and mode ~= '2') then return 0 end
  elseif mode == '0' then
    return -1
  end
  local status = fields['status']
  local final = ends == '1'
  local expire_ms = tonumber(at) + ttl * 1000
  if final and ttl > 0 and not cur[1] and passed(expire_ms) then return 0 end
  local jtype = fields['type'] or cur[3]
  local created = fields['created_ms'] or cur[4]
  local tenant = fields['tenant'] or cur[5] or 'default'
  local troot = tenant_root(root, tenant)
  local flat = {}
  for f, v in pairs(fields) do
    flat[#flat + 1] = f
    flat[#flat + 1] = v
  end
  if mode == '2' then redis.call('DEL', key) end
  redis.call('HSET', key, 'version', vtext, unpack(flat))
  if not cur[1] or mode == '2' then
    redis.call('ZADD', troot .. ':index', created, jid)
    redis.call('ZADD', troot .. ':index:type:' .. jtype, created, jid)
  end
  local was = cur[2]
  if not cur[1] and redis.call('SREM', root .. ':forgotten', jid) == 1 then
    hint = ''  -- FORGET already took it out of the counters
  end
  if not was and hint ~= '' then was = hint end
  if status and status ~= was then
    if was then
      redis.call('HINCRBY', counts, 'status:' .. was, -1)
      redis.call('HINCRBY', counts, 'type:' .. jtype .. ':' .. was, -1)
      redis.call('HINCRBY', counts, 'tenant:' .. tenant .. ':' .. was, -1)
      redis.call('ZREM', troot .. ':index:status:' .. was, jid)
    end
    redis.call('HINCRBY', counts, 'status:' .. status, 1)
    redis.call('HINCRBY', counts, 'type:' .. jtype .. ':' .. status, 1)
    redis.call('HINCRBY', counts, 'tenant:' .. tenant .. ':' .. status, 1)
    redis.call('ZADD', troot .. ':index:status:' .. status, created, jid)
  end
  if status and (status ~= cur[2] or mode == '2') then
    if final and ttl > 0 then
      redis.call('PEXPIREAT', key, string.format('%.0f', expire_ms))
      local member = expiring_member(tenant, status, jtype, jid)
      redis.call('ZADD', root .. ':expiring', expire_ms, member)
    else
      redis.call('PERSIST', key)
    end
  end
  return 1
end
local results = {0}
local missing = false
for i, u in ipairs(cjson.decode(ARGV[4])) do
  local r = apply(u[1], u[2], u[3], u[4], u[5], u[6], u[7])
  if r == -1 then missing = true end
  results[i + 1] = r
end
if position ~= '' and not missing then
  redis.call('SET', KEYS[2], position)
  results[1] = 1
end
return results
"""
)
"""Applies updates ``[job id, version, mode, fields, event time ms, counted status, final]`` to one
generation (all guarded by ARGV[1]). Mode 0: an event's changes, only onto a hash of an older
version (-1 when the hash is missing: refold the job); 1: a whole job, onto an older or missing
hash; 2: a whole job, also over the same version (repairs drift). ``final`` ("1"/"0") says
whether the status the fields carry ends the job (the script knows no status names). A final
job's hash expires
``ttl`` after its final event; one whose time has passed is not written back.

Returns ``{saved, result of each update}`` ({-2} when the guard fails). ARGV[5], when not
empty, is the log position these updates bring the generation to: it is saved in the same call
(KEYS[2]), so a step of the live projection costs one round trip, unless an update found its
hash missing (saved is then 0: the position waits until the refold of that job is written).
ARGV[6], when not empty, is the position the updates follow: when the generation's position is
another one (Redis lost it, another projection moved it), nothing is written ({-3})."""

LOCATE = """
local g = redis.call('GET', KEYS[1]) or ''
local root = ARGV[1]
if g ~= '' then root = root .. ':g' .. g end
return {g, redis.call('GET', root .. ':projection:position') or '0'}
"""
"""The active generation and its position (see ``generations.KeySpace``) in one round trip."""

READ = """
local g = redis.call('GET', KEYS[1])
local root = ARGV[1]
if g then root = root .. ':g' .. g end
return redis.call('HGETALL', root .. ':job:' .. ARGV[2])
"""
"""A job's hash in the active generation: resolving the generation and reading in one call."""

PRUNE = (
    TENANT_KEYS
    + """
local guard, root, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
if guard ~= '*' and (redis.call('GET', KEYS[1]) or '') ~= guard then return -2 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', root .. ':expiring', '-inf', now_ms, 'LIMIT', 0, limit)
local pruned = 0
for _, member in ipairs(due) do
  local tenant, job = 'default', member
  if string.sub(member, 1, 1) == '@' then
    tenant, job = string.match(member, '^@([^|]+)|(.*)$')
  end
  local troot = tenant_root(root, tenant)
  local status, rest = string.match(job, '^([^|]+)|(.*)$')
  local jtype, jid = string.match(rest, '^(.*)|([^|]+)$')
  if redis.call('EXISTS', root .. ':job:' .. jid) == 0 then
    redis.call('ZREM', troot .. ':index', jid)
    redis.call('ZREM', troot .. ':index:type:' .. jtype, jid)
    redis.call('ZREM', troot .. ':index:status:' .. status, jid)
    pruned = pruned + 1
  end
  redis.call('ZREM', root .. ':expiring', member)
end
return pruned
"""
)
"""Takes final jobs whose hash expired out of the list indexes (``<root>:expiring`` holds
``status|type|id`` by expiry time, ``@<tenant>|`` first for a tenant other than the default); a
job whose hash is back (requeued) keeps its entries. The counters are left alone: they count
every job of the generation, expired or not."""

FORGET = (
    TENANT_KEYS
    + """
local guard, root, jid = ARGV[1], ARGV[2], ARGV[3]
if guard ~= '*' and (redis.call('GET', KEYS[1]) or '') ~= guard then return -2 end
local key = root .. ':job:' .. jid
local cur = redis.call('HMGET', key, 'status', 'type', 'tenant')
local status, jtype, tenant = cur[1], cur[2], cur[3] or 'default'
local troot = tenant_root(root, tenant)
if status and jtype then
  local counts = root .. ':counts'
  redis.call('HINCRBY', counts, 'status:' .. status, -1)
  redis.call('HINCRBY', counts, 'type:' .. jtype .. ':' .. status, -1)
  redis.call('HINCRBY', counts, 'tenant:' .. tenant .. ':' .. status, -1)
  redis.call('ZREM', troot .. ':index:status:' .. status, jid)
  redis.call('ZREM', root .. ':expiring', expiring_member(tenant, status, jtype, jid))
end
if jtype then redis.call('ZREM', troot .. ':index:type:' .. jtype, jid) end
redis.call('ZREM', troot .. ':index', jid)
if status then redis.call('SADD', root .. ':forgotten', jid) end
return redis.call('DEL', key)
"""
)
"""Deletes a job's hash (its events cannot be applied) and takes it out of the counters and
indexes it was in, so the refold of its next event counts it as a new hash, as a clean
projection would. ``<root>:forgotten`` notes the job until its hash is written again: that write
must not uncount it a second time under the status a Requeued event assumes (APPLY's hint)."""

SET_POSITION = """
if ARGV[1] ~= '*' and (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return -2 end
if (ARGV[3] or '') ~= '' and (redis.call('GET', KEYS[2]) or '0') ~= ARGV[3] then return -3 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
"""Saves a generation's position, unless (guarded) that generation is no longer active (-2), or
(ARGV[3] given) the position is no longer the one the caller followed (-3: Redis lost it or
another projection moved it; as APPLY's ARGV[6])."""
