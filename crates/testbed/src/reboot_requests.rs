//! Reboots a simulated host asks for itself. Simulated hosts share `/bin` and `/usr/bin` with the
//! machine, so nothing may ever run the machine's `reboot`: the stand-in system's own
//! `sw/bin/systemctl reboot` (and `sw/bin/reboot`) only leave a request in the host's `/boot`
//! ([`REQUEST_FILE`]), which [`Testbed::serve_reboot_requests`] picks up and turns into a
//! [`Testbed::reboot_nowait`], as a real host reboots after `systemctl reboot` returned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::reboot::DEFAULT_SSHD_DELAY;
use crate::Testbed;

/// The request, relative to the host's `/boot` (the stand-in's `systemctl reboot` writes it).
pub const REQUEST_FILE: &str = "fleet-standin-reboot-request";

impl Testbed {
    /// Until `stop` is set: every 100 ms, reboots each host that asked for it (its sshd back
    /// after [`DEFAULT_SSHD_DELAY`], in the background). Returns how many reboots it served.
    /// Run it on a thread of its own (`std::thread::scope`) alongside fleet.
    pub fn serve_reboot_requests(&self, stop: &AtomicBool) -> usize {
        let mut served = 0;
        while !stop.load(Ordering::SeqCst) {
            for (i, h) in self.hosts.iter().enumerate() {
                let request = self.runtimes[i].dir.join("boot").join(REQUEST_FILE);
                if std::fs::remove_file(&request).is_ok() {
                    // Let the command that asked return first, as systemctl does.
                    std::thread::sleep(Duration::from_millis(200));
                    if self.reboot_nowait(&h.name, DEFAULT_SSHD_DELAY).is_ok() {
                        served += 1;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        served
    }
}
