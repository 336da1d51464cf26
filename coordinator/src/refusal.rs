//! Refusals made visible: every refused request, connection or stalled call is counted by
//! reason and logged once (at the one place that refuses it), with its request and peer; the
//! log lines of a reason are rate-limited so a flood cannot flood the log, and a suppressed
//! count rides on the next line that gets through. The counters are plain atomics (the
//! metrics exporter reads [`Refusals::snapshot`]).

use std::{
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::error::CoordinatorError;

/// Why something was refused: the counters' labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A connection over `limits.max_connections_per_ip` or `limits.max_connections`.
    ConnectionLimit,
    /// A connection whose TLS handshake failed or did not finish within
    /// `limits.message_timeout_secs` (plaintext to a TLS endpoint, a client that does not
    /// trust the certificate, a stalled handshake).
    TlsHandshake,
    /// A call that did not complete within its deadline (a unary request not received whole
    /// within `limits.message_timeout_secs`; an upload past its whole-request deadline).
    Deadline,
    /// An upload message that did not arrive within `limits.message_timeout_secs`.
    MessageTimeout,
    /// A message the wire layer could not decode or that exceeds the size limit.
    Malformed,
    NotEnrolled,
    MalformedKey,
    BadChallenge,
    BadSignature,
    NoSession,
    WrongRound,
    NoOpenRound,
    AlreadyAnswered,
    InFlight,
    BadUpload,
    DigestMismatch,
    NormTooLarge,
    BadExampleCount,
    BadPrivacyReport,
    InvalidField,
    NotFinished,
    NoSuchRound,
    /// A governance proposal refused (unchained, expired, under-signed, ...).
    ProposalRefused,
    /// Not a refusal: the coordinator failed (storage, ledger). Counted so it shows.
    Internal,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 24] = [
        Reason::ConnectionLimit,
        Reason::TlsHandshake,
        Reason::Deadline,
        Reason::MessageTimeout,
        Reason::Malformed,
        Reason::NotEnrolled,
        Reason::MalformedKey,
        Reason::BadChallenge,
        Reason::BadSignature,
        Reason::NoSession,
        Reason::WrongRound,
        Reason::NoOpenRound,
        Reason::AlreadyAnswered,
        Reason::InFlight,
        Reason::BadUpload,
        Reason::DigestMismatch,
        Reason::NormTooLarge,
        Reason::BadExampleCount,
        Reason::BadPrivacyReport,
        Reason::InvalidField,
        Reason::NotFinished,
        Reason::NoSuchRound,
        Reason::ProposalRefused,
        Reason::Internal,
    ];

    /// The label (snake case) used in logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ConnectionLimit => "connection_limit",
            Reason::TlsHandshake => "tls_handshake",
            Reason::Deadline => "deadline",
            Reason::MessageTimeout => "message_timeout",
            Reason::Malformed => "malformed",
            Reason::NotEnrolled => "not_enrolled",
            Reason::MalformedKey => "malformed_key",
            Reason::BadChallenge => "bad_challenge",
            Reason::BadSignature => "bad_signature",
            Reason::NoSession => "no_session",
            Reason::WrongRound => "wrong_round",
            Reason::NoOpenRound => "no_open_round",
            Reason::AlreadyAnswered => "already_answered",
            Reason::InFlight => "in_flight",
            Reason::BadUpload => "bad_upload",
            Reason::DigestMismatch => "digest_mismatch",
            Reason::NormTooLarge => "norm_too_large",
            Reason::BadExampleCount => "bad_example_count",
            Reason::BadPrivacyReport => "bad_privacy_report",
            Reason::InvalidField => "invalid_field",
            Reason::NotFinished => "not_finished",
            Reason::NoSuchRound => "no_such_round",
            Reason::ProposalRefused => "proposal_refused",
            Reason::Internal => "internal",
        }
    }

    fn index(self) -> usize {
        Reason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(Reason::ALL.len() - 1)
    }
}

impl From<&CoordinatorError> for Reason {
    fn from(e: &CoordinatorError) -> Self {
        use CoordinatorError as E;
        match e {
            E::NotEnrolled { .. } => Reason::NotEnrolled,
            E::MalformedKey(_) => Reason::MalformedKey,
            E::BadChallenge => Reason::BadChallenge,
            E::BadRegistrationSignature { .. }
            | E::BadUpdateSignature { .. }
            | E::BadDeclineSignature { .. } => Reason::BadSignature,
            E::NoSession => Reason::NoSession,
            E::WrongRound { .. } => Reason::WrongRound,
            E::NoOpenRound { .. } => Reason::NoOpenRound,
            E::AlreadySubmitted { .. } => Reason::AlreadyAnswered,
            E::InFlight { .. } => Reason::InFlight,
            E::DimensionMismatch { .. }
            | E::NonFinite { .. }
            | E::ChunkTooLarge { .. }
            | E::ChunkOutOfOrder { .. }
            | E::Truncated { .. }
            | E::MissingHeader
            | E::DuplicateHeader => Reason::BadUpload,
            E::DigestMismatch { .. } => Reason::DigestMismatch,
            E::NormTooLarge { .. } => Reason::NormTooLarge,
            E::BadExampleCount { .. } => Reason::BadExampleCount,
            E::BadPrivacyReport(_) => Reason::BadPrivacyReport,
            E::InvalidField { .. } => Reason::InvalidField,
            E::RoundNotFinished { .. } => Reason::NotFinished,
            E::NoSuchRound { .. } => Reason::NoSuchRound,
            E::Proposal(_) => Reason::ProposalRefused,
            E::Config(_) => Reason::Internal,
            E::Store(_) | E::Model(_) | E::Ledger(_) | E::Internal(_) => Reason::Internal,
        }
    }
}

/// Log lines per reason per window; past that, refusals are only counted until the window
/// ends, and the next line says how many were not logged.
const LOG_BURST: u32 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
struct LogWindow {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// Counters of refusals by reason, and the rate limiter of their log lines.
pub struct Refusals {
    counts: [AtomicU64; Reason::ALL.len()],
    windows: Mutex<[Option<LogWindow>; Reason::ALL.len()]>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self::new()
    }
}

impl Refusals {
    pub fn new() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            windows: Mutex::new([None; Reason::ALL.len()]),
        }
    }

    /// Count a refusal and log it (rate-limited): `request` names what was refused (a gRPC
    /// method, or "connection"), `peer` who sent it, `message` what it was told (which names the
    /// request too).
    pub fn record(&self, reason: Reason, request: &str, peer: Option<SocketAddr>, message: &str) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
        let Some(suppressed) = self.admit(reason, Instant::now()) else {
            return;
        };
        let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        if reason == Reason::Internal {
            tracing::error!(
                reason = reason.as_str(),
                request,
                %peer,
                suppressed,
                "{message}"
            );
        } else {
            tracing::warn!(
                reason = reason.as_str(),
                request,
                %peer,
                suppressed,
                "{message}"
            );
        }
    }

    /// Whether a line of `reason` may be logged at `now`; if so, how many were suppressed
    /// since the last one.
    fn admit(&self, reason: Reason, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows[reason.index()].get_or_insert(LogWindow {
            started: now,
            logged: 0,
            suppressed: 0,
        });
        if now.duration_since(w.started) >= LOG_WINDOW {
            w.started = now;
            w.logged = 0;
        }
        if w.logged < LOG_BURST {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }

    /// How many refusals of `reason` so far.
    pub fn count(&self, reason: Reason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    /// Every reason with its count, in [`Reason::ALL`] order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Reason::ALL
            .iter()
            .map(|r| (r.as_str(), self.count(*r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_reason_and_labels_are_distinct() {
        let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        assert_eq!(
            Reason::from(&CoordinatorError::BadChallenge),
            Reason::BadChallenge
        );
    }

    #[test]
    fn counts_everything_and_logs_a_burst_per_window() {
        let r = Refusals::new();
        let t0 = Instant::now();
        let admitted = (0..100)
            .filter(|_| r.admit(Reason::NoSession, t0).is_some())
            .count();
        assert_eq!(admitted, LOG_BURST as usize);
        // Another reason has its own window.
        assert_eq!(r.admit(Reason::BadChallenge, t0), Some(0));
        // The next window's first line reports what was suppressed.
        assert_eq!(r.admit(Reason::NoSession, t0 + LOG_WINDOW), Some(90));
        assert_eq!(r.admit(Reason::NoSession, t0 + LOG_WINDOW), Some(0));
        for _ in 0..3 {
            r.record(Reason::Deadline, "Challenge", None, "test");
        }
        assert_eq!(r.count(Reason::Deadline), 3);
        assert!(r.snapshot().contains(&("deadline", 3)));
    }
}
