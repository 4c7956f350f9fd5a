//! fleet-executor (skeleton).
