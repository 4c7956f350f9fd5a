//! fleet-planner (skeleton).
