//! Headless Chromium for the report tests of the crates that write pages (the coordinator's and
//! the examples'; each includes this file with `#[path]`). Debian's `chromium`, which `.ci/run`
//! installs and announces with FEDLEDGER_CHROMIUM=1; without it the check is skipped, so
//! `cargo test` on a bare machine still passes.

use std::path::Path;
use std::process::Command;

/// Whether FEDLEDGER_CHROMIUM=1 says Chromium is installed (printing that the check is skipped
/// when not).
pub fn enabled() -> bool {
    let on = std::env::var("FEDLEDGER_CHROMIUM").as_deref() == Ok("1");
    if !on {
        println!("skipped the headless Chromium check: set FEDLEDGER_CHROMIUM=1 (needs chromium)");
    }
    on
}

/// The DOM Chromium builds from `page`; also writes a PNG screenshot of it to `shot` with a
/// window of `window` ("WIDTH,HEIGHT"). Chromium's profile goes under `tmp`.
pub fn dom_and_screenshot(page: &Path, tmp: &Path, shot: &Path, window: &str) -> String {
    let run = |extra: &[String]| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!(
                "--user-data-dir={}",
                tmp.join("chromium-profile").display()
            ))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("run chromium (FEDLEDGER_CHROMIUM=1 says it is installed)");
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = run(&["--dump-dom".to_owned()]);
    let _ = std::fs::remove_file(shot);
    run(&[
        format!("--screenshot={}", shot.display()),
        format!("--window-size={window}"),
    ]);
    let png = std::fs::read(shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("screenshot: {}", shot.display());
    dom
}
