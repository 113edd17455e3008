//! The webhooks waiting for delivery, on disk when the broker has a data
//! dir (`history.data_dir`, `--data-dir`): `<data_dir>/webhooks.redb`, a
//! redb file of its own beside the history's (one table, `pending`: seq →
//! the [`Job`] as JSON), so neither's writes wait for the other's. A job
//! is written (and fsync'd) before its first attempt and removed once it
//! was delivered or given up: a restart, even a crash, sends what was
//! pending, in order, with the same `webhook-id`; its attempts start over.
//! Without a data dir they live in memory only.
//!
//! A second table, `occupied`, names the channels announced occupied and
//! not yet vacated, written in the same commit as the webhook that
//! announces the change: a restarted broker takes them as vacating (see
//! `occupancy`), so a channel whose subscribers do not come back gets its
//! `channel.vacated`, and one whose subscribers reconnect within the grace
//! gets no second `channel.occupied`.

use std::{path::Path, sync::Arc};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::job::Job;

/// The file inside the data dir.
pub const FILE_NAME: &str = "webhooks.redb";

const PENDING: TableDefinition<u64, &str> = TableDefinition::new("pending");

/// Channel → 1 while it is announced occupied (see the module docs).
const OCCUPIED: TableDefinition<&str, u8> = TableDefinition::new("occupied");

/// A channel's occupancy as the pending file keeps it: `true` once it was
/// announced occupied, `false` once vacated.
pub type Mark = (String, bool);

/// Where pending webhooks are kept (see the module docs).
#[derive(Clone, Default)]
pub struct Pending {
    db: Option<Arc<Database>>,
}

impl Pending {
    /// The file in `data_dir` (created when missing), or none: in memory.
    pub fn open(data_dir: Option<&Path>) -> Result<Self, String> {
        let Some(dir) = data_dir else {
            return Ok(Self::default());
        };
        std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        let write = db.begin_write().map_err(|err| err.to_string())?;
        write.open_table(PENDING).map_err(|err| err.to_string())?;
        write.open_table(OCCUPIED).map_err(|err| err.to_string())?;
        write.commit().map_err(|err| err.to_string())?;
        Ok(Self {
            db: Some(Arc::new(db)),
        })
    }

    /// Every pending job, oldest first (an unreadable row is skipped with
    /// a log line).
    pub fn load(&self) -> Vec<Job> {
        self.rows(PENDING, "pending webhooks", |seq, text| {
            serde_json::from_str::<Job>(text)
                .map_err(|err| log::warn!("pending webhook skipped seq={seq} reason={err}"))
                .ok()
        })
    }

    /// The channels announced occupied and not vacated when the file was
    /// last written (an unreadable file gives none, with a log line).
    pub fn occupied(&self) -> Vec<String> {
        self.rows(OCCUPIED, "occupied channels", |channel, _| {
            Some(channel.to_owned())
        })
    }

    /// What `row` makes of every row of `table`, in key order (`None`: the
    /// row is skipped); without a file, or when the file cannot be read,
    /// none (with a log line naming `what`).
    fn rows<K, V, T>(
        &self,
        table: TableDefinition<K, V>,
        what: &str,
        mut row: impl for<'a> FnMut(K::SelfType<'a>, V::SelfType<'a>) -> Option<T>,
    ) -> Vec<T>
    where
        K: redb::Key + 'static,
        V: redb::Value + 'static,
    {
        let Some(db) = &self.db else {
            return Vec::new();
        };
        let mut read = || -> Result<Vec<T>, String> {
            let txn = db.begin_read().map_err(|err| err.to_string())?;
            let table = txn.open_table(table).map_err(|err| err.to_string())?;
            let mut kept = Vec::new();
            for entry in table.iter().map_err(|err| err.to_string())? {
                let (key, value) = entry.map_err(|err| err.to_string())?;
                kept.extend(row(key.value(), value.value()));
            }
            Ok(kept)
        };
        read().unwrap_or_else(|err| {
            log::warn!("{what} not read reason={err}");
            Vec::new()
        })
    }

    /// Keeps `jobs` until [`Self::remove`], and the channels' new
    /// occupancy `marks`: on disk, in one fsync'd commit, when there is a
    /// file. A failure is logged: the jobs are still sent, they only would
    /// not survive a restart.
    pub async fn save(&self, jobs: &[Job], marks: &[Mark]) {
        let Some(db) = self.db.clone() else {
            return;
        };
        let marks = marks.to_vec();
        let rows: Vec<(u64, String)> = jobs
            .iter()
            .filter_map(|job| serde_json::to_string(job).ok().map(|text| (job.seq, text)))
            .collect();
        let count = rows.len();
        let write = move || -> Result<(), String> {
            let txn = db.begin_write().map_err(|err| err.to_string())?;
            {
                let mut table = txn.open_table(PENDING).map_err(|err| err.to_string())?;
                for (seq, text) in &rows {
                    table
                        .insert(*seq, text.as_str())
                        .map_err(|err| err.to_string())?;
                }
                let mut occupied = txn.open_table(OCCUPIED).map_err(|err| err.to_string())?;
                for (channel, now_occupied) in &marks {
                    if *now_occupied {
                        occupied
                            .insert(channel.as_str(), 1)
                            .map_err(|err| err.to_string())?;
                    } else {
                        occupied
                            .remove(channel.as_str())
                            .map_err(|err| err.to_string())?;
                    }
                }
            }
            txn.commit().map_err(|err| err.to_string())
        };
        match tokio::task::spawn_blocking(write).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => log::warn!("pending webhooks not saved count={count} reason={err}"),
            Err(err) => log::warn!("pending webhooks not saved count={count} reason={err}"),
        }
    }

    /// Forgets the job `seq` (delivered or given up).
    pub async fn remove(&self, seq: u64) {
        let Some(db) = self.db.clone() else {
            return;
        };
        let remove = move || -> Result<(), String> {
            let txn = db.begin_write().map_err(|err| err.to_string())?;
            {
                let mut table = txn.open_table(PENDING).map_err(|err| err.to_string())?;
                table.remove(seq).map_err(|err| err.to_string())?;
            }
            txn.commit().map_err(|err| err.to_string())
        };
        match tokio::task::spawn_blocking(remove).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => log::warn!("pending webhook not removed seq={seq} reason={err}"),
            Err(err) => log::warn!("pending webhook not removed seq={seq} reason={err}"),
        }
    }

    /// The seq after the highest one pending (new jobs go after them).
    pub fn next_seq(jobs: &[Job]) -> u64 {
        jobs.iter()
            .map(|job| job.seq)
            .max()
            .map_or(1, |seq| seq.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Saved jobs come back in order after the file is opened again; removed ones do not.
    #[tokio::test]
    async fn jobs_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let job = |seq: u64| Job {
            seq,
            url: "http://127.0.0.1:9/hook".into(),
            id: format!("msg_{seq}"),
            channel: "room".into(),
            body: "{}".into(),
        };
        {
            let pending = Pending::open(Some(dir.path())).expect("opens");
            pending
                .save(
                    &[job(3), job(1)],
                    &[("room".into(), true), ("hall".into(), true)],
                )
                .await;
            pending.save(&[job(2)], &[("hall".into(), false)]).await;
            pending.remove(2).await;
        }
        let pending = Pending::open(Some(dir.path())).expect("opens again");
        let jobs = pending.load();
        let seqs: Vec<u64> = jobs.iter().map(|j| j.seq).collect();
        assert_eq!(seqs, [1, 3]);
        assert_eq!(Pending::next_seq(&jobs), 4);
        assert_eq!(pending.occupied(), ["room"]);
    }
}
