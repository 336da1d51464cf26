//! Every binary's `--help`, and every subcommand's, explains every argument: each option and
//! positional argument listed carries a description, and so does each subcommand.

mod common;

use std::{path::PathBuf, process::Command};

use common::binaries::{ledger_bin, participant_bin};

/// The short help (`-h`): one line per argument, its description on the same line.
fn help(bin: &PathBuf, path: &[String]) -> String {
    let out = Command::new(bin)
        .args(path)
        .arg("-h")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{} {path:?} -h", bin.display());
    String::from_utf8(out.stdout).unwrap()
}

/// The entries of a help section (`Commands:`, `Options:`, `Arguments:`): name and description,
/// which clap puts on the same line, or on the next one, indented further, when it is long.
fn section(text: &str, title: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut entries = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if indent(l) > 6 {
            continue; // a description on its own line
        }
        let t = l.trim();
        let (name, inline) = match t.find("  ") {
            Some(at) => (t[..at].to_owned(), t[at..].trim().to_owned()),
            None => (t.to_owned(), String::new()),
        };
        let description = match lines.get(i + 1) {
            Some(next) if inline.is_empty() && indent(next) > 6 => next.trim().to_owned(),
            _ => inline,
        };
        entries.push((name, description));
    }
    entries
}

/// Checks `path`'s help and recurses into its subcommands; returns the commands checked.
fn check(bin: &PathBuf, path: Vec<String>, undocumented: &mut Vec<String>) -> usize {
    let text = help(bin, &path);
    let name = format!(
        "{} {}",
        bin.file_name().unwrap().to_string_lossy(),
        path.join(" ")
    );
    for title in ["Options:", "Arguments:"] {
        for (arg, description) in section(&text, title) {
            if description.is_empty() {
                undocumented.push(format!("{name}: {arg}"));
            }
        }
    }
    let mut checked = 1;
    for (sub, description) in section(&text, "Commands:") {
        if sub == "help" {
            continue;
        }
        if description.is_empty() {
            undocumented.push(format!("{name}: subcommand {sub}"));
        }
        let mut p = path.clone();
        p.push(sub);
        checked += check(bin, p, undocumented);
    }
    checked
}

#[test]
fn every_argument_of_every_binary_and_subcommand_is_explained() {
    let bins = [
        PathBuf::from(env!("CARGO_BIN_EXE_fedledger-coordinator")),
        participant_bin().to_owned(),
        ledger_bin().to_owned(),
    ];
    let mut undocumented = Vec::new();
    let mut checked = 0;
    for bin in &bins {
        checked += check(bin, Vec::new(), &mut undocumented);
    }
    // Three binaries and their subcommands (keygen, serve, run, verify, ...).
    assert!(checked >= 20, "only {checked} commands found");
    assert!(
        undocumented.is_empty(),
        "arguments without a description:\n{}",
        undocumented.join("\n")
    );
}
