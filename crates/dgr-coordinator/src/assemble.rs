//! Turning a finished job's accepted outputs into a shard set: each done shard's file moves
//! from `attempts/` to `shard-NNNNN.arrow`, then the stage writes its manifest. Safe to repeat
//! after a crash half-way (a shard already in place is checked by its checksum).

use std::path::Path;

use dgr_core::shards::{ShardEntry, shard_file_name, verify_checksum};

use crate::error::{CoordinatorError, Result};
use crate::ledger::DoneShard;

/// Moves the done shards into place in `out`; returns their manifest entries in shard order.
pub fn place_done_shards(out: &Path, done: &[DoneShard]) -> Result<Vec<ShardEntry>> {
    let failed = |message: String| CoordinatorError::Server(message);
    let mut entries = Vec::with_capacity(done.len());
    for shard in done {
        let file = shard_file_name(shard.shard.id as usize);
        let target = out.join(&file);
        let attempt = out.join("attempts").join(&shard.file);
        if attempt.is_file() {
            std::fs::rename(&attempt, &target)
                .map_err(|e| failed(format!("cannot move {} to {}: {e}", attempt.display(), target.display())))?;
        }
        verify_checksum(&target, &shard.sha256).map_err(|e| failed(format!("shard {}: {e}", shard.shard.id)))?;
        entries.push(ShardEntry { file, queries: shard.rows, sha256: shard.sha256.clone() });
    }
    Ok(entries)
}

/// Removes what is left of `attempts/` (discarded or unfinished outputs).
pub fn remove_attempts(out: &Path) -> Result<()> {
    let attempts = out.join("attempts");
    match std::fs::remove_dir_all(&attempts) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(CoordinatorError::Server(format!("{}: cannot remove: {e}", attempts.display())))
        }
        _ => Ok(()),
    }
}
