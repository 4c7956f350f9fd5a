//! fleet-store (skeleton).
