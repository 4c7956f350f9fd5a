//! fleet-build (skeleton).
