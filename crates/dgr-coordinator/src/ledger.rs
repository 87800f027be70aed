//! The shard ledger: one SQLite database per job (stage and split), in the job directory.
//!
//! Every change is one transaction, so a coordinator killed at any moment restarts from a
//! consistent state: done shards stay done (with their file and checksum), leases keep their
//! expiry and simply run out if their worker is gone too. WAL journaling with `synchronous =
//! NORMAL` survives a killed process (not a power cut between checkpoints: the coordinator
//! then re-runs at most the shards completed since).
//!
//! Tables: `job` (key/value: the job's definition, checked on reopen), `shards`, `workers`,
//! `leases` (every lease granted, so completions and heartbeats can be matched to shards).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::api::{JobInfo, ShardSpec, StatusResponse, WorkerStatus};
use crate::error::{CoordinatorError, Result};

/// Version of the ledger's tables; a database of another version is refused.
pub const LEDGER_VERSION: &str = "1";

/// The job a ledger tracks.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub stage: String,
    pub split: String,
    /// Query ranges `(first, count)`, in order; shard ids are their indices.
    pub shards: Vec<(u64, u64)>,
    pub output_dir: PathBuf,
    /// What the shards are computed from (inputs and their checksums): a ledger is reused
    /// only for the same job.
    pub fingerprint: String,
}

/// A shard's result, as recorded at completion.
#[derive(Debug, Clone, PartialEq)]
pub struct DoneShard {
    pub shard: ShardSpec,
    pub file: String,
    pub sha256: String,
    pub rows: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LeaseOutcome {
    Leased {
        lease_id: i64,
        shard: ShardSpec,
    },
    /// Open shards are all leased.
    Wait,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Renewed,
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Accepted,
    Duplicate,
}

pub struct Ledger {
    path: PathBuf,
    conn: Connection,
    job: JobSpec,
    /// When the job began (first opened), Unix seconds.
    started: f64,
    /// Shards not done yet (kept here so that no request counts them in the database).
    open: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS job (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    id INTEGER PRIMARY KEY,
    first INTEGER NOT NULL,
    count INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'done')),
    lease_id INTEGER,
    lease_expires REAL,
    file TEXT,
    sha256 TEXT,
    rows INTEGER,
    done_at REAL,
    done_by INTEGER
);
CREATE INDEX IF NOT EXISTS shards_by_state ON shards (state, id);
CREATE INDEX IF NOT EXISTS shards_by_expiry ON shards (state, lease_expires);
CREATE TABLE IF NOT EXISTS workers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    registered REAL NOT NULL,
    last_seen REAL NOT NULL,
    shards_done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    shard INTEGER NOT NULL,
    worker INTEGER NOT NULL,
    granted REAL NOT NULL
);
";

impl Ledger {
    /// Opens the ledger at `path`, creating it for `job`, or checks that the one there tracks
    /// the same job.
    pub fn open(path: &Path, job: JobSpec, now: f64) -> Result<Self> {
        let db = |source| CoordinatorError::Ledger { path: path.to_path_buf(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CoordinatorError::Server(format!("{}: {e}", parent.display())))?;
        }
        let conn = Connection::open(path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        let mut ledger = Ledger { path: path.to_path_buf(), conn, job, started: now, open: 0 };
        ledger.define_or_check(now)?;
        let open: i64 = ledger
            .conn
            .query_row("SELECT COUNT(*) FROM shards WHERE state != 'done'", [], |r| r.get(0))
            .map_err(ledger.db())?;
        ledger.open = open as u64;
        Ok(ledger)
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> CoordinatorError + '_ {
        |source| CoordinatorError::Ledger { path: self.path.clone(), source }
    }

    fn define_or_check(&mut self, now: f64) -> Result<()> {
        let definition = [
            ("version", LEDGER_VERSION.to_string()),
            ("stage", self.job.stage.clone()),
            ("split", self.job.split.clone()),
            ("shards", serde_json::to_string(&self.job.shards).unwrap_or_default()),
            ("output_dir", self.job.output_dir.display().to_string()),
            ("fingerprint", self.job.fingerprint.clone()),
        ];
        let existing: Option<String> = self
            .conn
            .query_row("SELECT value FROM job WHERE key = 'started'", [], |r| r.get(0))
            .optional()
            .map_err(self.db())?;
        if let Some(started) = existing {
            for (key, expected) in &definition {
                let found: Option<String> = self
                    .conn
                    .query_row("SELECT value FROM job WHERE key = ?1", [key], |r| r.get(0))
                    .optional()
                    .map_err(self.db())?;
                if found.as_deref() != Some(expected.as_str()) {
                    return Err(CoordinatorError::JobMismatch {
                        path: self.path.clone(),
                        message: format!(
                            "this ledger tracks another job ({key} is {}, this job's is {expected}); \
                             finish that job, or start over with --overwrite",
                            found.as_deref().unwrap_or("<missing>")
                        ),
                    });
                }
            }
            self.started = started.parse().unwrap_or(now);
            return Ok(());
        }
        let tx =
            self.conn.transaction().map_err(|source| CoordinatorError::Ledger { path: self.path.clone(), source })?;
        let db = |source| CoordinatorError::Ledger { path: self.path.clone(), source };
        for (key, value) in &definition {
            tx.execute("INSERT INTO job (key, value) VALUES (?1, ?2)", params![key, value]).map_err(db)?;
        }
        tx.execute("INSERT INTO job (key, value) VALUES ('started', ?1)", [now.to_string()]).map_err(db)?;
        for (id, (first, count)) in self.job.shards.iter().enumerate() {
            tx.execute(
                "INSERT INTO shards (id, first, count, state) VALUES (?1, ?2, ?3, 'pending')",
                params![id as i64, *first as i64, *count as i64],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(())
    }

    pub fn job(&self) -> &JobSpec {
        &self.job
    }

    /// The job as workers see it.
    pub fn job_info(&self, lease_seconds: f64, heartbeat_seconds: f64) -> JobInfo {
        JobInfo {
            stage: self.job.stage.clone(),
            split: self.job.split.clone(),
            shards: self.job.shards.len() as u64,
            lease_seconds,
            heartbeat_seconds,
            output_dir: self.job.output_dir.display().to_string(),
            fingerprint: self.job.fingerprint.clone(),
        }
    }

    pub fn register(&mut self, name: &str, role: &str, now: f64) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO workers (name, role, registered, last_seen) VALUES (?1, ?2, ?3, ?3)",
                params![name, role, now],
            )
            .map_err(self.db())?;
        Ok(self.conn.last_insert_rowid())
    }

    fn touch(&self, worker: i64, now: f64) -> Result<()> {
        let updated = self
            .conn
            .execute("UPDATE workers SET last_seen = ?2 WHERE id = ?1", params![worker, now])
            .map_err(self.db())?;
        if updated == 0 { Err(CoordinatorError::UnknownWorker(worker)) } else { Ok(()) }
    }

    /// Leases a shard whose lease expired (the longest expired first), else the first pending
    /// one. Both lookups go through an index, so a lease costs the same late in a large job.
    pub fn lease(&mut self, worker: i64, now: f64, lease_seconds: f64) -> Result<LeaseOutcome> {
        self.touch(worker, now)?;
        if self.open == 0 {
            return Ok(LeaseOutcome::Done);
        }
        let path = self.path.clone();
        let db = |source| CoordinatorError::Ledger { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(db)?;
        let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?));
        let mut open: Option<(i64, i64, i64)> = tx
            .query_row(
                "SELECT id, first, count FROM shards WHERE state = 'leased' AND lease_expires < ?1
                 ORDER BY lease_expires LIMIT 1",
                [now],
                row,
            )
            .optional()
            .map_err(db)?;
        if open.is_none() {
            open = tx
                .query_row("SELECT id, first, count FROM shards WHERE state = 'pending' ORDER BY id LIMIT 1", [], row)
                .optional()
                .map_err(db)?;
        }
        let Some((id, first, count)) = open else {
            return Ok(LeaseOutcome::Wait);
        };
        tx.execute("INSERT INTO leases (shard, worker, granted) VALUES (?1, ?2, ?3)", params![id, worker, now])
            .map_err(db)?;
        let lease_id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE shards SET state = 'leased', lease_id = ?2, lease_expires = ?3 WHERE id = ?1",
            params![id, lease_id, now + lease_seconds],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(LeaseOutcome::Leased { lease_id, shard: ShardSpec { id, first: first as u64, count: count as u64 } })
    }

    /// The shard and worker of a lease.
    fn lease_owner(&self, lease_id: i64) -> Result<(i64, i64)> {
        self.conn
            .query_row("SELECT shard, worker FROM leases WHERE id = ?1", [lease_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(self.db())?
            .ok_or(CoordinatorError::UnknownLease(lease_id))
    }

    /// Renews a lease that is still the shard's current one (even if it ran out, as long as
    /// nobody else took the shard).
    pub fn heartbeat(&mut self, lease_id: i64, now: f64, lease_seconds: f64) -> Result<Heartbeat> {
        let (shard, worker) = self.lease_owner(lease_id)?;
        self.touch(worker, now)?;
        let renewed = self
            .conn
            .execute(
                "UPDATE shards SET lease_expires = ?3 WHERE id = ?1 AND state = 'leased' AND lease_id = ?2",
                params![shard, lease_id, now + lease_seconds],
            )
            .map_err(self.db())?;
        Ok(if renewed == 1 { Heartbeat::Renewed } else { Heartbeat::Lost })
    }

    /// Records `shard`'s result from any of its leases, unless the shard is already done.
    pub fn complete(
        &mut self,
        lease_id: i64,
        shard: i64,
        file: &str,
        sha256: &str,
        rows: u64,
        now: f64,
    ) -> Result<Completion> {
        self.shard(shard)?;
        let (leased, worker) = self.lease_owner(lease_id)?;
        if leased != shard {
            return Err(CoordinatorError::LeaseMismatch { lease: lease_id, leased, claimed: shard });
        }
        self.touch(worker, now)?;
        let path = self.path.clone();
        let db = |source| CoordinatorError::Ledger { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(db)?;
        let done = tx
            .execute(
                "UPDATE shards SET state = 'done', lease_id = ?2, lease_expires = NULL, file = ?3, sha256 = ?4,
                 rows = ?5, done_at = ?6, done_by = ?7
                 WHERE id = ?1 AND state != 'done'",
                params![shard, lease_id, file, sha256, rows as i64, now, worker],
            )
            .map_err(db)?;
        if done == 1 {
            tx.execute("UPDATE workers SET shards_done = shards_done + 1 WHERE id = ?1", [worker]).map_err(db)?;
            tx.commit().map_err(db)?;
            self.open -= 1;
            return Ok(Completion::Accepted);
        }
        // Done already. The same completion again (its answer was lost) is still accepted;
        // any other is a duplicate.
        let (done_lease, done_sha): (Option<i64>, Option<String>) = tx
            .query_row("SELECT lease_id, sha256 FROM shards WHERE id = ?1", [shard], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)?;
        tx.commit().map_err(db)?;
        let repeated = done_lease == Some(lease_id) && done_sha.as_deref() == Some(sha256);
        Ok(if repeated { Completion::Accepted } else { Completion::Duplicate })
    }

    /// The shard's range; an error for an id the job does not have.
    pub fn shard(&self, id: i64) -> Result<ShardSpec> {
        self.conn
            .query_row("SELECT first, count FROM shards WHERE id = ?1", [id], |r| {
                Ok(ShardSpec { id, first: r.get::<_, i64>(0)? as u64, count: r.get::<_, i64>(1)? as u64 })
            })
            .optional()
            .map_err(self.db())?
            .ok_or(CoordinatorError::UnknownShard(id))
    }

    pub fn is_complete(&self) -> Result<bool> {
        let open: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM shards WHERE state != 'done'", [], |r| r.get(0))
            .map_err(self.db())?;
        Ok(open == 0)
    }

    /// Results of the done shards, in shard order.
    pub fn done_shards(&self) -> Result<Vec<DoneShard>> {
        let mut statement = self
            .conn
            .prepare("SELECT id, first, count, file, sha256, rows FROM shards WHERE state = 'done' ORDER BY id")
            .map_err(self.db())?;
        let rows = statement
            .query_map([], |r| {
                Ok(DoneShard {
                    shard: ShardSpec {
                        id: r.get(0)?,
                        first: r.get::<_, i64>(1)? as u64,
                        count: r.get::<_, i64>(2)? as u64,
                    },
                    file: r.get(3)?,
                    sha256: r.get(4)?,
                    rows: r.get::<_, i64>(5)? as u64,
                })
            })
            .map_err(self.db())?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(self.db())
    }

    /// Leases granted per shard, in shard order (how often each was started).
    pub fn leases_per_shard(&self) -> Result<Vec<u64>> {
        let mut counts = vec![0u64; self.job.shards.len()];
        let mut statement =
            self.conn.prepare("SELECT shard, COUNT(*) FROM leases GROUP BY shard").map_err(self.db())?;
        let rows = statement.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))).map_err(self.db())?;
        for row in rows {
            let (shard, n) = row.map_err(self.db())?;
            if let Some(slot) = counts.get_mut(shard as usize) {
                *slot = n as u64;
            }
        }
        Ok(counts)
    }

    pub fn status(&self, now: f64) -> Result<StatusResponse> {
        let count = |sql: &str| -> Result<u64> {
            self.conn.query_row(sql, [now], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(self.db())
        };
        let done = count("SELECT COUNT(*) FROM shards WHERE state = 'done' AND ?1 = ?1")?;
        let leased = count("SELECT COUNT(*) FROM shards WHERE state = 'leased' AND lease_expires >= ?1")?;
        let leases_granted = count("SELECT COUNT(*) FROM leases WHERE ?1 = ?1")?;
        let shards = self.job.shards.len() as u64;
        let mut statement = self
            .conn
            .prepare(
                "SELECT w.id, w.name, w.shards_done, w.registered, w.last_seen,
                        (SELECT s.id FROM shards s JOIN leases l ON s.lease_id = l.id
                         WHERE l.worker = w.id AND s.state = 'leased' AND s.lease_expires >= ?1)
                 FROM workers w ORDER BY w.id",
            )
            .map_err(self.db())?;
        let workers = statement
            .query_map([now], |r| {
                let registered: f64 = r.get(3)?;
                let done = r.get::<_, i64>(2)? as u64;
                Ok(WorkerStatus {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    shards_done: done,
                    shards_per_minute: done as f64 * 60.0 / (now - registered).max(1.0),
                    seconds_since_seen: now - r.get::<_, f64>(4)?,
                    shard: r.get(5)?,
                })
            })
            .map_err(self.db())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.db())?;
        // Rate from the completions so far: shards per second since the first lease.
        let first_lease: Option<f64> =
            self.conn.query_row("SELECT MIN(granted) FROM leases", [], |r| r.get(0)).map_err(self.db())?;
        let eta_seconds = match first_lease {
            Some(start) if done > 0 && now > start => Some((shards - done) as f64 * (now - start) / done as f64),
            _ => None,
        };
        Ok(StatusResponse {
            stage: self.job.stage.clone(),
            split: self.job.split.clone(),
            shards,
            done,
            leased,
            pending: shards - done - leased,
            leases_granted,
            elapsed_seconds: now - self.started,
            eta_seconds,
            workers,
        })
    }
}
