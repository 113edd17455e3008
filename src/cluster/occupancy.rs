//! Occupancy across the cluster, decided in Redis (the broker's
//! `SharedOccupancy`, implemented in `super`): which channel transitions
//! become webhooks, each exactly once for the whole cluster, and who sends
//! them.
//!
//! Per channel, in its slot (hash tag `{<channel>}`, so one script sees
//! every key of the decision on a Redis Cluster too):
//! - `{c}:occupancy:nodes`, node → until when (ms) it has subscribers
//!   there: written when its first subscriber comes, refreshed with the
//!   subscriber counts every `cluster.presence_interval` (valid for three),
//!   removed when its last one goes; a node that dies stops counting;
//! - `{c}:occupancy`: `occupied`, `vacating:<deadline ms>`, or absent;
//! - `{c}:occupancy:users`, `<node>\n<user>` → 1 (member webhooks);
//! - `{c}:webhooks`, a Stream of the notices waiting to be sent (fields
//!   `id`, `type`, `at`, `user`, `info`), at most `webhooks.max_pending`
//!   (older ones trimmed and counted as dropped);
//! - `{c}:webhooks:lease`: the node sending them now, expiring.
//!
//! And `{webhooks}:due`, channel → when a node should look at it.
//!
//! [`RECORD`] runs for every change of a node: the first node with
//! subscribers queues `channel.occupied`; the last one to go starts the
//! grace (`vacating`), which a node's subscriber cancels. Since a
//! transition is decided and queued by one script, two nodes cannot both
//! queue it. A node that queued something, or started a grace, puts the
//! channel in `{webhooks}:due` (a separate command in another slot: the
//! notice waits in the channel's stream until then, and an occupied
//! channel is looked at every few intervals anyway).
//!
//! Every node looks at the due channels; the first to take a channel's
//! lease runs [`SETTLE`] (a grace that ended queues `channel.vacated`;
//! nodes whose entry expired are dropped, so a channel whose nodes all
//! died is vacated too) and sends the stream's notices in order, removing
//! each once delivered or given up, while it renews its lease. A node that
//! dies mid-send lets its lease expire and another node sends the notice
//! again (same id: at-least-once). Why not one Stream with a consumer
//! group: it would live in one slot, and the script that decides a
//! transition could not append to it atomically on a Redis Cluster; per
//! channel, the decision and the queue are one step, and the lease keeps
//! each channel's notices in order.

use std::time::Duration;

use redis::Cmd;

use super::{
    Cluster, ClusterError,
    keys::Keys,
    script::{Lua, millis},
};
use crate::{
    broker::occupancy::{Notice, OccupancyChange, Recorded, notice_id},
    names::ChannelName,
};

/// What occupancy tracking is given (`Cluster::track_occupancy`).
#[derive(Debug, Clone)]
pub struct Tracking {
    /// `webhooks.vacated_after`.
    pub grace: Duration,
    /// Most notices a channel's stream keeps (`webhooks.max_pending`).
    pub max_queue: usize,
}

/// KEYS: nodes, state, stream, users. ARGV: node, op (occupied, vacated,
/// joined, left), now ms, valid until ms, grace ms, id, user, info, max
/// queue. Answers {what, trimmed}: what 1 = a notice queued, 2 = a grace
/// started (its deadline third), 0 = nothing.
const RECORD: &str = r#"
local node, op, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local function others()
  local all = redis.call('HGETALL', KEYS[1])
  local live = {}
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) < now then
      redis.call('HDEL', KEYS[1], all[i])
    elseif all[i] ~= node then
      live[#live + 1] = all[i]
    end
  end
  return live
end
local function queue(kind, user, info)
  redis.call('XADD', KEYS[3], '*', 'id', ARGV[6], 'type', kind, 'at', ARGV[3], 'user', user, 'info', info)
  return redis.call('XTRIM', KEYS[3], 'MAXLEN', tonumber(ARGV[9]))
end
if op == 'occupied' then
  redis.call('HSET', KEYS[1], node, ARGV[4])
  local state = redis.call('GET', KEYS[2])
  if state == 'occupied' then return {0, 0, 0} end
  redis.call('SET', KEYS[2], 'occupied')
  if state then return {0, 0, 0} end
  return {1, queue('channel.occupied', '', ''), 0}
elseif op == 'vacated' then
  redis.call('HDEL', KEYS[1], node)
  if #others() > 0 or redis.call('GET', KEYS[2]) ~= 'occupied' then return {0, 0, 0} end
  local deadline = now + tonumber(ARGV[5])
  redis.call('SET', KEYS[2], 'vacating:' .. deadline)
  return {2, 0, deadline}
end
local field = node .. '\n' .. ARGV[7]
if op == 'joined' then
  redis.call('HSET', KEYS[4], field, '1')
else
  redis.call('HDEL', KEYS[4], field)
end
for _, other in ipairs(others()) do
  if redis.call('HEXISTS', KEYS[4], other .. '\n' .. ARGV[7]) == 1 then return {0, 0, 0} end
end
local kind = 'member.left'
if op == 'joined' then kind = 'member.joined' end
return {1, queue(kind, ARGV[7], ARGV[8]), 0}
"#;

/// KEYS: nodes, state, stream, users. ARGV: now ms, grace ms, id of a
/// `channel.vacated`, max queue, count. Settles the channel (nodes gone, a
/// grace ended), then answers its state and its first `count` notices,
/// flat: state, then key, id, type, at, user, info per notice.
const SETTLE: &str = r#"
local now = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local live = 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    live = live + 1
  end
end
local state = redis.call('GET', KEYS[2])
if live == 0 and state then
  if state == 'occupied' then
    state = 'vacating:' .. (now + tonumber(ARGV[2]))
    redis.call('SET', KEYS[2], state)
  end
  local deadline = tonumber(string.sub(state, 10))
  if deadline and deadline <= now then
    redis.call('DEL', KEYS[2], KEYS[4])
    redis.call('XADD', KEYS[3], '*', 'id', ARGV[3], 'type', 'channel.vacated', 'at', ARGV[1], 'user', '', 'info', '')
    redis.call('XTRIM', KEYS[3], 'MAXLEN', tonumber(ARGV[4]))
    state = false
  end
end
local out = {state or ''}
for _, entry in ipairs(redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', tonumber(ARGV[5]))) do
  local f = {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  out[#out + 1] = entry[1]
  out[#out + 1] = f.id or ''
  out[#out + 1] = f.type or ''
  out[#out + 1] = f.at or '0'
  out[#out + 1] = f.user or ''
  out[#out + 1] = f.info or ''
end
return out
"#;

/// KEYS: lease. ARGV: node, hold ms. Takes the lease, or renews it when
/// this node holds it; answers 1 when this node holds it now.
const LEASE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
"#;

/// KEYS: lease. ARGV: node. Drops the lease if this node holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#;

/// The scripts of this module.
#[derive(Debug, Clone, Copy)]
enum Which {
    Record,
    Settle,
    Lease,
    Release,
}

fn script(which: Which) -> &'static Lua {
    static SCRIPTS: std::sync::OnceLock<[Lua; 4]> = std::sync::OnceLock::new();
    let scripts = SCRIPTS.get_or_init(|| [RECORD, SETTLE, LEASE, RELEASE].map(Lua::new));
    &scripts[which as usize]
}

/// A call of [`RECORD`] or [`SETTLE`] with the channel's keys.
fn channel_script(which: Which, keys: &Keys, channel: &ChannelName) -> Cmd {
    let mut call = script(which).call(4);
    call.arg(keys.occupancy_nodes(channel))
        .arg(keys.occupancy(channel))
        .arg(keys.webhooks(channel))
        .arg(keys.occupancy_users(channel));
    call
}

/// Runs [`RECORD`] for this node's `change` at `now`; answers whether a
/// notice was queued and how many old ones the bound dropped. A queued
/// notice or a started grace puts the channel in the schedule.
pub async fn record(
    cluster: &Cluster,
    tracking: &Tracking,
    channel: &ChannelName,
    change: &OccupancyChange,
    now: u64,
) -> Result<Recorded, ClusterError> {
    let keys = cluster.keys();
    let (op, user, info) = match change {
        OccupancyChange::Occupied => ("occupied", "", String::new()),
        OccupancyChange::Vacated => ("vacated", "", String::new()),
        OccupancyChange::Joined { user, info } => ("joined", &**user, raw(info)),
        OccupancyChange::Left { user, info } => ("left", &**user, raw(info)),
    };
    let mut invocation = channel_script(Which::Record, keys, channel);
    invocation
        .arg(cluster.node_id())
        .arg(op)
        .arg(now)
        .arg(now.saturating_add(cluster.entry_lifetime_ms()))
        .arg(millis(tracking.grace))
        .arg(notice_id())
        .arg(user)
        .arg(info)
        .arg(tracking.max_queue);
    let mut conn = cluster.conn();
    let (what, trimmed, deadline): (u8, u64, u64) = cluster
        .run(script(Which::Record).run(&invocation, &mut conn))
        .await?;
    if trimmed > 0 {
        log::warn!("webhook notices dropped channel={channel} count={trimmed} reason=max_pending");
    }
    match what {
        1 => schedule(cluster, channel, now).await?,
        2 => schedule(cluster, channel, deadline).await?,
        _ => {}
    }
    Ok(Recorded {
        queued: what == 1,
        dropped: trimmed,
    })
}

fn raw(info: &Option<std::sync::Arc<serde_json::value::RawValue>>) -> String {
    info.as_ref()
        .map(|i| i.get().to_owned())
        .unwrap_or_default()
}

/// Refreshes this node's entry on `channels` (those with subscribers
/// here), as an `occupied` change does: a channel whose vacancy was
/// decided while this node could not reach Redis is occupied again.
pub async fn refresh(
    cluster: &Cluster,
    tracking: &Tracking,
    channels: &[ChannelName],
    now: u64,
) -> Result<(), ClusterError> {
    let recorded = futures_util::future::join_all(
        channels
            .iter()
            .map(|channel| record(cluster, tracking, channel, &OccupancyChange::Occupied, now)),
    )
    .await;
    recorded
        .into_iter()
        .try_for_each(|outcome| outcome.map(drop))
}

/// Puts `channel` in the schedule at `at` (earlier only: a later time
/// never postpones a look already due).
async fn schedule(cluster: &Cluster, channel: &ChannelName, at: u64) -> Result<(), ClusterError> {
    let mut conn = cluster.conn();
    cluster
        .run(
            redis::cmd("ZADD")
                .arg(cluster.keys().webhooks_due())
                .arg("LT")
                .arg(at)
                .arg(channel.as_str())
                .query_async::<()>(&mut conn),
        )
        .await
}

/// The channels due at `now`, at most `max`.
pub async fn due(
    cluster: &Cluster,
    now: u64,
    max: usize,
) -> Result<Vec<ChannelName>, ClusterError> {
    let mut conn = cluster.conn();
    let names: Vec<String> = cluster
        .run(
            redis::cmd("ZRANGEBYSCORE")
                .arg(cluster.keys().webhooks_due())
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(max)
                .query_async(&mut conn),
        )
        .await?;
    Ok(names
        .iter()
        .filter_map(|name| ChannelName::parse_recorded(name).ok())
        .collect())
}

/// Takes or renews the channel's lease for this node.
pub async fn lease(cluster: &Cluster, channel: &ChannelName) -> Result<bool, ClusterError> {
    let lease = script(Which::Lease);
    let mut invocation = lease.call(1);
    invocation
        .arg(cluster.keys().webhooks_lease(channel))
        .arg(cluster.node_id())
        .arg(cluster.entry_lifetime_ms());
    let mut conn = cluster.conn();
    let held: u8 = cluster.run(lease.run(&invocation, &mut conn)).await?;
    Ok(held == 1)
}

/// Runs [`SETTLE`]: the channel's state after it, and its first `max`
/// notices.
async fn settle(
    cluster: &Cluster,
    tracking: &Tracking,
    channel: &ChannelName,
    now: u64,
    max: usize,
) -> Result<(String, Vec<Notice>), ClusterError> {
    let keys = cluster.keys();
    let mut invocation = channel_script(Which::Settle, keys, channel);
    invocation
        .arg(now)
        .arg(millis(tracking.grace))
        .arg(notice_id())
        .arg(tracking.max_queue)
        .arg(max);
    let mut conn = cluster.conn();
    let flat: Vec<String> = cluster
        .run(script(Which::Settle).run(&invocation, &mut conn))
        .await?;
    let Some((state, rest)) = flat.split_first() else {
        return Err(ClusterError::Protocol("an empty settle answer".into()));
    };
    let notices = rest
        .chunks_exact(6)
        .filter_map(|f| {
            let change = match f[2].as_str() {
                "channel.occupied" => OccupancyChange::Occupied,
                "channel.vacated" => OccupancyChange::Vacated,
                kind @ ("member.joined" | "member.left") => {
                    let user = std::sync::Arc::from(f[4].as_str());
                    let info = serde_json::value::RawValue::from_string(f[5].clone())
                        .ok()
                        .map(std::sync::Arc::from);
                    match kind {
                        "member.joined" => OccupancyChange::Joined { user, info },
                        _ => OccupancyChange::Left { user, info },
                    }
                }
                _ => return None,
            };
            Some(Notice {
                key: f[0].clone(),
                id: f[1].clone(),
                change,
                at_ms: f[3].parse().unwrap_or(now),
            })
        })
        .collect();
    Ok((state.clone(), notices))
}

/// The channel's first `max` notices after settling it.
pub async fn notices(
    cluster: &Cluster,
    tracking: &Tracking,
    channel: &ChannelName,
    now: u64,
    max: usize,
) -> Result<Vec<Notice>, ClusterError> {
    Ok(settle(cluster, tracking, channel, now, max).await?.1)
}

/// Takes the notice `key` out of the channel's stream.
pub async fn done(cluster: &Cluster, channel: &ChannelName, key: &str) -> Result<(), ClusterError> {
    let mut conn = cluster.conn();
    cluster
        .run(
            redis::cmd("XDEL")
                .arg(cluster.keys().webhooks(channel))
                .arg(key)
                .query_async::<()>(&mut conn),
        )
        .await
}

/// Schedules the channel's next look (now with notices left, at the
/// grace's end while vacating, after [`Cluster::entry_lifetime_ms`] while occupied, to
/// notice nodes that died; none while vacant), then drops the lease.
pub async fn release(
    cluster: &Cluster,
    tracking: &Tracking,
    channel: &ChannelName,
    now: u64,
) -> Result<(), ClusterError> {
    let next = |state: &str, queued: bool| {
        if queued {
            return Some(now);
        }
        match state.strip_prefix("vacating:") {
            Some(deadline) => deadline.parse().ok(),
            None => (state == "occupied").then(|| now.saturating_add(cluster.entry_lifetime_ms())),
        }
    };
    let (state, queued) = settle(cluster, tracking, channel, now, 1).await?;
    let due = cluster.keys().webhooks_due();
    let mut conn = cluster.conn();
    let command = match next(&state, !queued.is_empty()) {
        Some(at) => redis::cmd("ZADD")
            .arg(&due)
            .arg(at)
            .arg(channel.as_str())
            .clone(),
        None => redis::cmd("ZREM").arg(&due).arg(channel.as_str()).clone(),
    };
    cluster.run(command.query_async::<()>(&mut conn)).await?;
    // Another node may have queued a notice or started a grace between the
    // look and the write above, and scheduled it before the write: looked
    // at again, it keeps its (earlier) place.
    let (state, queued) = settle(cluster, tracking, channel, now, 1).await?;
    if let Some(at) = next(&state, !queued.is_empty()) {
        schedule(cluster, channel, at).await?;
    }
    let release = script(Which::Release);
    let mut invocation = release.call(1);
    invocation
        .arg(cluster.keys().webhooks_lease(channel))
        .arg(cluster.node_id());
    cluster
        .run(release.run::<u8>(&invocation, &mut conn))
        .await
        .map(drop)
}
