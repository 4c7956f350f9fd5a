# Shortcuts for the xtask commands (`just` is optional: `cargo xtask <cmd>` does the same).

# Run every test (installs missing prerequisites first; needs root).
test *args:
    cargo xtask test {{args}}

# Start a 3-host simulated fleet and run fleet against it.
demo:
    cargo xtask demo

# Benchmarks against nix-copy-closure; writes docs/performance.md (`just bench --quick`: smoke run).
bench *args:
    cargo xtask bench {{args}}

# Install what the tests and the demo need.
setup:
    cargo xtask setup
