//! Shared helpers for the runnable fedledger federations.
