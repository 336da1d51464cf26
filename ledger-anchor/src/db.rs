//! Opening sled: every sled database of the workspace (the log, a witness's state, the
//! coordinator's and the participant's stores) is opened here.

/// Opens the sled database at `dir`, waiting up to a second for a previous handle's file lock
/// to be released: sled 0.34 lets go of its lock a moment after the last handle is dropped
/// (its I/O threads finish first), so a process that closes and reopens a store, or is
/// restarted at once, would otherwise fail. A lock still held after that (another process
/// using the same directory) is returned as sled's error, which names the lock file.
pub fn open_sled(dir: &std::path::Path) -> Result<sled::Db, sled::Error> {
    let mut tries = 0;
    loop {
        match sled::open(dir) {
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
