//! Reconcilers, desired-Secret and status builders, events, metrics.
