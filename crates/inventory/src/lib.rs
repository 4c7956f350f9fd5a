//! fleet-inventory (skeleton).
