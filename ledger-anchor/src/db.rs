//! Opening sled: every sled database of the workspace (the log, a witness's state, the
//! coordinator's and the participant's stores) is opened here.

/// Opens the sled database at `dir`, waiting up to a second for a previous handle's file lock
/// to be released: sled 0.34 lets go of its lock a moment after the last handle is dropped
/// (its I/O threads finish first), so a process that closes and reopens a store, or is
/// restarted at once, would otherwise fail. A lock still held after that (another process
/// using the same directory) is returned as sled's error, which names the lock file.
pub fn open_sled(dir: &std::path::Path) -> Result<sled::Db, sled::Error> {
    open_waiting(&sled::Config::new().path(dir))
}

/// Sled's segment (and I/O buffer) size for the log's store. Sled writes any item larger than
/// a quarter of a segment (a node rewritten whole, holding many entry pages) to a file of its
/// own; with sled's default of 512 KiB that is every item over 128 KiB, and creating and
/// removing those files (inode allocation) dominated a catch-up's profile. At 8 MiB they stay
/// in the log's segments.
pub const LOG_SEGMENT_BYTES: usize = 8 << 20;

/// [`open_sled`] for the log's store: segments of [`LOG_SEGMENT_BYTES`] for a new store, and
/// sled's default for one created with it (sled refuses to change a store's segment size).
pub fn open_log_sled(dir: &std::path::Path) -> Result<sled::Db, sled::Error> {
    match open_waiting(
        &sled::Config::new()
            .path(dir)
            .segment_size(LOG_SEGMENT_BYTES),
    ) {
        Err(sled::Error::Unsupported(m)) if m.contains("io buffer size") => open_sled(dir),
        other => other,
    }
}

fn open_waiting(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let mut tries = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if is_lock_contention(&e) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Whether sled's open failed only because the lock file is held (sled wraps `EWOULDBLOCK`
/// in an error of kind `Other` whose message names it).
fn is_lock_contention(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_store_gets_large_segments_and_one_created_with_the_default_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (new, old) = (dir.path().join("new"), dir.path().join("old"));
        {
            let db = open_log_sled(&new).unwrap();
            db.insert(b"k", vec![7u8; 300 << 10]).unwrap();
            db.flush().unwrap();
            let db = sled::open(&old).unwrap();
            db.insert(b"k", &b"v"[..]).unwrap();
            db.flush().unwrap();
        }
        // The new store's segments are large: a sled opened with the default refuses it.
        assert!(matches!(
            sled::Config::new().path(&new).open(),
            Err(sled::Error::Unsupported(_))
        ));
        let db = open_log_sled(&new).unwrap();
        assert_eq!(db.get(b"k").unwrap().unwrap().len(), 300 << 10);
        drop(db);
        // The store created with sled's default opens with it, its data intact.
        let db = open_log_sled(&old).unwrap();
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_store_reopened_while_its_lock_is_let_go_opens_and_one_still_held_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = open_sled(&path).unwrap();
        first.insert(b"k", b"v").unwrap();
        first.flush().unwrap();
        // Held throughout: refused with sled's error naming the lock, after the wait.
        match open_sled(&path) {
            Err(sled::Error::Io(e)) => assert!(is_lock_contention(&e), "{e}"),
            other => panic!(
                "expected the lock to be refused, got {:?}",
                other.map(|_| ())
            ),
        }
        // Let go during the wait (as sled's threads do after the last handle is dropped).
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(first);
        });
        let second = open_sled(&path).unwrap();
        assert_eq!(second.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        release.join().unwrap();
    }
}
