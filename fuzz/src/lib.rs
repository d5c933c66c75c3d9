//! What the fuzz targets share: a real token verifier with a key only this
//! process holds (so a fuzzer-made token can never be genuinely signed,
//! and a target-made one always is), and an independent statement of
//! which IP addresses the outbound guard must refuse.
//!
//! The oracle is written apart from `imports::guard` on purpose: a
//! property that re-used the guard's own code could not catch its gaps.

pub mod addresses;
pub mod render;
pub mod tokens;

// The unit tests below link the instrumented crates: libFuzzer provides
// the coverage callbacks they call (`scripts/fuzz` runs these tests).
#[cfg(test)]
use libfuzzer_sys as _;
