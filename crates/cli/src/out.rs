//! Writing to stdout and stderr without ever panicking. `println!`/`errln!` panic when the
//! stream is closed (`fleet apply 2>&1 | tee log` after `tee` died, `fleet hosts | head`); fleet
//! uses these macros instead, which drop what cannot be written. A closed stdout is a normal
//! way for a reader to say it has seen enough.

use std::io::Write;

/// Writes `args` to stderr; a closed or failing stderr is ignored.
pub fn err(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args);
    let _ = e.flush();
}

/// Writes `args` to stdout; a closed or failing stdout is ignored.
pub fn out(args: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_fmt(args);
    let _ = o.flush();
}

/// `errln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::err(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `errp!` that never panics.
macro_rules! errp {
    ($($arg:tt)*) => { $crate::out::err(format_args!($($arg)*)) };
}

/// `println!` that never panics.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::out::out(format_args!("{}\n", format_args!($($arg)*))) };
}

