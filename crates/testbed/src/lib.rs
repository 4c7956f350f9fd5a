//! fleet-testbed (skeleton).
