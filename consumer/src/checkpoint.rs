//! The saved cursor: which log, and the last sequence processed in it.
//!
//! Saved by writing a temporary file beside the target and renaming it over the target: rename
//! is atomic, so a crash leaves either the old checkpoint or the new one, never half of one.
//! The format is two `key=value` lines, readable and editable by hand:
//!
//! ```text
//! log_id=18f3a2c4e5b6-1-9a8b7c6d
//! after_sequence=1234
//! ```

use std::{
    fs, io,
    io::Write as _,
    path::{Path, PathBuf},
};

/// A cursor in a named log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub log_id: String,
    pub after_sequence: u64,
}

/// Why a checkpoint file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("checkpoint {path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// Reads the checkpoint at `path`; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.into(),
                source,
            });
        }
    };
    let malformed = |reason: String| CheckpointError::Malformed {
        path: path.into(),
        reason,
    };
    let (mut log_id, mut after) = (None, None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some(("log_id", v)) => log_id = Some(v.to_owned()),
            Some(("after_sequence", v)) => {
                after = Some(v.parse::<u64>().map_err(|_| {
                    malformed(format!("after_sequence {v:?} is not a sequence number"))
                })?)
            }
            _ => return Err(malformed(format!("unexpected line {line:?}"))),
        }
    }
    match (log_id, after) {
        (Some(log_id), Some(after_sequence)) => Ok(Some(Checkpoint {
            log_id,
            after_sequence,
        })),
        _ => Err(malformed("needs both log_id and after_sequence".into())),
    }
}

/// Writes `checkpoint` to `path` atomically.
pub fn save(path: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let io_err = |source| CheckpointError::Io {
        path: path.into(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = fs::File::create(&tmp).map_err(io_err)?;
    write!(
        file,
        "log_id={}\nafter_sequence={}\n",
        checkpoint.log_id, checkpoint.after_sequence
    )
    .map_err(io_err)?;
    // Without the sync, a power loss right after the rename could leave an empty file.
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        assert!(load(&path).unwrap().is_none());
        let cp = Checkpoint {
            log_id: "abc-1".into(),
            after_sequence: 42,
        };
        save(&path, &cp).unwrap();
        assert_eq!(load(&path).unwrap(), Some(cp.clone()));
        let newer = Checkpoint {
            after_sequence: 43,
            ..cp
        };
        save(&path, &newer).unwrap();
        assert_eq!(load(&path).unwrap(), Some(newer));
        assert!(!dir.path().join("cursor.tmp").exists());
    }

    #[test]
    fn malformed_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        fs::write(&path, "log_id=x\nafter_sequence=minus one\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("\"minus one\" is not a sequence number"),
            "{err}"
        );
        fs::write(&path, "log_id=x\n").unwrap();
        assert!(load(&path).is_err());
    }
}
