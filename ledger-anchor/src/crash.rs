//! Crash points for tests that kill real processes (`failpoints` builds only).
//!
//! `FEDLEDGER_CRASH_AT="point@n,point2@m"` makes the process abort (SIGABRT: no destructor runs,
//! nothing is flushed, as with SIGKILL) the `n`-th time it reaches the named fail-rs point
//! (`@n` may be left out: the first time). The binaries call [`crash_points_from_env`] at start
//! in `failpoints` builds; release builds have neither the points nor this module's effect.

/// Arm the crash points named in `FEDLEDGER_CRASH_AT`. Returns the points armed.
#[cfg(feature = "failpoints")]
pub fn crash_points_from_env() -> Result<Vec<String>, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let Ok(spec) = std::env::var("FEDLEDGER_CRASH_AT") else {
        return Ok(Vec::new());
    };
    let mut armed = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (point, nth) = match item.split_once('@') {
            Some((p, n)) => (
                p,
                n.parse::<u64>()
                    .map_err(|e| format!("FEDLEDGER_CRASH_AT: {item:?}: {e}"))?,
            ),
            None => (item, 1),
        };
        let hits = AtomicU64::new(0);
        let name = point.to_owned();
        fail::cfg_callback(point, move || {
            if hits.fetch_add(1, Ordering::SeqCst) + 1 == nth {
                eprintln!("crash point {name} reached (hit {nth}): aborting");
                std::process::abort();
            }
        })?;
        armed.push(item.to_owned());
    }
    Ok(armed)
}

/// Without the `failpoints` feature nothing can be armed: a request to is an error, so a test
/// that expects a crash never runs against a build that cannot crash.
#[cfg(not(feature = "failpoints"))]
pub fn crash_points_from_env() -> Result<Vec<String>, String> {
    match std::env::var("FEDLEDGER_CRASH_AT") {
        Ok(spec) if !spec.is_empty() => Err(format!(
            "FEDLEDGER_CRASH_AT={spec:?} needs a build with the failpoints feature"
        )),
        _ => Ok(Vec::new()),
    }
}
