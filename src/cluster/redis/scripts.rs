//! The Lua scripts of [`super::RedisCluster`]: each runs atomically on the Redis server, so that
//! a check and the write that depends on it cannot be split by another node.
//!
//! Times are the server's (`TIME`), so the nodes' clocks do not matter. Numbers are passed as
//! decimal strings; a Lua number formats as `%.14g`, exact up to 10^14 (ms timestamps and
//! fences stay far below).

use redis::Script;

/// JOIN — KEYS: fingerprint, node key, nodes ZSET. ARGV: fingerprint, public_url, node JSON,
/// node timeout (ms), node id.
///
/// Sets the fingerprint if absent; refuses another fingerprint; refuses a live entry of the
/// same id with another `public_url`; else publishes the node's first heartbeat.
/// Returns `{"ok", ""}`, `{"keys_differ", theirs}` or `{"duplicate", their public_url}`.
const JOIN: &str = r#"
local theirs = redis.call('GET', KEYS[1])
if theirs and theirs ~= ARGV[1] then return {'keys_differ', theirs} end
local cur = redis.call('GET', KEYS[2])
if cur then
  local ok, entry = pcall(cjson.decode, cur)
  if ok and type(entry) == 'table' and type(entry.public_url) == 'string'
     and entry.public_url ~= ARGV[2] then
    return {'duplicate', entry.public_url}
  end
end
if not theirs then redis.call('SET', KEYS[1], ARGV[1], 'NX') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[3], now, ARGV[5])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return {'ok', ''}
"#;

/// HEARTBEAT — KEYS: nodes ZSET, node key, fingerprint. ARGV: node id, node JSON, node timeout
/// (ms), node key prefix, fingerprint (`""`: not joined).
///
/// ZADD with the server time, SET the entry with PX = node timeout, then remove every member
/// older than the node timeout with its entry. Sets the fingerprint again if Redis lost it.
/// Returns the server time (ms).
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local timeout = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - timeout))
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', ARGV[4] .. id)
end
if ARGV[5] ~= '' then redis.call('SET', KEYS[3], ARGV[5], 'NX') end
return now
"#;

/// NODES — KEYS: nodes ZSET. ARGV: node timeout (ms), node key prefix.
///
/// Returns `{id, score, json, ...}` for every member within the node timeout whose entry has
/// not expired.
const NODES: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf', 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  local json = redis.call('GET', ARGV[2] .. live[i])
  if json then
    out[#out + 1] = live[i]
    out[#out + 1] = live[i + 1]
    out[#out + 1] = json
  end
end
return out
"#;

/// CLAIM — KEYS: owner, fence counter. ARGV: node id, lease (ms).
///
/// Nil if the lease is held; else a new fence (INCR) and the lease `"<fence>:<node>"`.
const CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], fence .. ':' .. ARGV[1], 'PX', ARGV[2])
return fence
"#;

/// RENEW — KEYS: owner, fence counter. ARGV: node id, fence, lease (ms).
///
/// `"held"`: the lease is ours, extended. `"reasserted"`: no lease and no higher fence given
/// since ours (it lapsed, or Redis lost it): ours again, with the counter raised to our fence
/// if Redis lost it. `"lost"`: another node holds it, or claimed it since.
const RENEW: &str = r#"
local ours = ARGV[2] .. ':' .. ARGV[1]
local cur = redis.call('GET', KEYS[1])
if cur == ours then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 'held'
end
if cur then return 'lost' end
local counter = redis.call('GET', KEYS[2])
if counter then
  local given = tonumber(counter)
  if given == nil then return redis.error_reply('ERR the fence counter is not a number') end
  if given > tonumber(ARGV[2]) then return 'lost' end
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ours, 'PX', ARGV[3])
return 'reasserted'
"#;

/// RELEASE — KEYS: owner. ARGV: `"<fence>:<node>"`. Deletes the lease only if it is still
/// ours. Returns the number of keys deleted.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// The scripts, with their SHA1 computed once (EVALSHA, loaded again after a restart).
pub(super) struct Scripts {
    pub join: Script,
    pub heartbeat: Script,
    pub nodes: Script,
    pub claim: Script,
    pub renew: Script,
    pub release: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            join: Script::new(JOIN),
            heartbeat: Script::new(HEARTBEAT),
            nodes: Script::new(NODES),
            claim: Script::new(CLAIM),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        }
    }
}
