//! The database file is private: it holds message bodies, session hashes
//! and device keys (PSKs must be stored retrievable). Under the usual umask
//! 022, SQLite would create it world-readable; so the file is created here
//! first, mode 0600, and SQLite gives its `-wal` and `-shm` files the mode
//! of the database file. An existing file readable by others is left as the
//! operator made it, with a warning.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub(crate) fn create_private(path: &Path) {
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => warn_if_shared(path),
        // Anything else (no such directory, no permission) is reported by
        // the open that follows, with the message users already know.
        Err(_) => {}
    }
}

fn warn_if_shared(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the database holds messages and device keys and is readable by other users; \
             run: chmod 600 on it and its -wal and -shm files"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_private_and_an_old_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        create_private(&path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_private(&old);
        let mode = std::fs::metadata(&old).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
