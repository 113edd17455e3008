//! Running the cluster's Lua scripts, one way for all of them (the shared
//! log's publish and fetch, the pulse book, occupancy): each is a [`Lua`],
//! sent as one `EVALSHA` command built here ([`Lua::call`]), and loaded when
//! the server answers `NOSCRIPT` (a restarted or new server), then run again
//! ([`Lua::run`]; [`Lua::run_then_wait`] adds `WAIT` in the same pipeline).
//!
//! Built directly, not through the redis crate's `ScriptInvocation`, which
//! keeps every key and argument in a buffer of its own and copies them all
//! into such a command: a cost the publish path paid on every call
//! (docs/BENCH-cluster.md). Durations go to the scripts as whole
//! milliseconds ([`millis`]).

use std::time::Duration;

use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, Script, ServerErrorKind};

use super::connections::Commands;

/// One Lua script, hashed once; see the module doc.
pub struct Lua(Script);

impl Lua {
    pub fn new(source: &str) -> Self {
        Self(Script::new(source))
    }

    /// An `EVALSHA` of this script with `keys` keys; the caller adds the
    /// keys, then the arguments. (On a Redis Cluster the command is routed
    /// by its first key.)
    pub fn call(&self, keys: usize) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.0.get_hash()).arg(keys);
        cmd
    }

    /// Runs `call` (made by [`Lua::call`]); loads the script first when the
    /// server does not have it, then runs it again.
    pub async fn run<T: FromRedisValue>(&self, call: &Cmd, conn: &mut Commands) -> RedisResult<T> {
        match call.query_async(conn).await {
            Err(err) if is_no_script(&err) => {
                self.0.load_async(conn).await?;
                call.query_async(conn).await
            }
            outcome => outcome,
        }
    }

    /// Runs `call` and `WAIT replicas wait_ms` in one pipeline (so `WAIT`
    /// runs on the server, and connection, that ran the script); answers
    /// the script's answer and the replicas that confirmed.
    pub async fn run_then_wait<T: FromRedisValue>(
        &self,
        call: &Cmd,
        replicas: u32,
        wait_ms: u64,
        conn: &mut Commands,
    ) -> RedisResult<(T, u32)> {
        let mut pipe = redis::pipe();
        pipe.add_command(call.clone())
            .cmd("WAIT")
            .arg(replicas)
            .arg(wait_ms);
        match pipe.query_async(conn).await {
            Err(err) if is_no_script(&err) => {
                self.0.load_async(conn).await?;
                pipe.query_async(conn).await
            }
            outcome => outcome,
        }
    }
}

fn is_no_script(err: &redis::RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// `duration` in whole milliseconds, as the scripts (and Redis' `PEXPIRE`)
/// take it; saturates rather than wraps.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
