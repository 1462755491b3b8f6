//! CRD types and conditions; no I/O.
