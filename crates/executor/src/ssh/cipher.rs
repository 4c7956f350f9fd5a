//! Which SSH cipher fleet prefers for a host, and which one the handshake settled on.
//!
//! Bulk copies spend a real share of the deployer's and the host's CPU on the cipher
//! (docs/performance.md). AES-GCM is several times cheaper than ChaCha20-Poly1305 on a CPU with
//! AES instructions and several times dearer on one without (a Raspberry Pi 4). So fleet puts
//! `aes256-gcm@openssh.com` and `aes128-gcm@openssh.com` first only when **both** sides have them
//! in hardware: the deployer (`is_x86_feature_detected!("aes")`, or the `aes` feature on
//! aarch64) and the host (fleet.toml says it is an x86_64 host: x86-64 CPUs have had AES-NI for
//! over a decade; [`SshTarget::host_aes`](super::SshTarget)). Everywhere else ChaCha20-Poly1305
//! stays first, as in OpenSSH. The server picks the first of our list it supports, so a host
//! whose sshd lacks AES-GCM still gets ChaCha20-Poly1305.

use std::borrow::Cow;

use russh::cipher;

/// Whether the deployer's CPU has AES instructions.
pub fn deployer_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The ciphers to offer, best first: AES-GCM first when both ends have AES in hardware, else
/// ChaCha20-Poly1305 first (russh's own order). Pure, so it is tested.
pub fn preferred_ciphers(deployer_aes: bool, host_aes: bool) -> Vec<cipher::Name> {
    let first: [cipher::Name; 3] = if deployer_aes && host_aes {
        [
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
            cipher::CHACHA20_POLY1305,
        ]
    } else {
        [
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
        ]
    };
    let mut v = first.to_vec();
    v.extend([
        cipher::AES_256_CTR,
        cipher::AES_192_CTR,
        cipher::AES_128_CTR,
    ]);
    v
}

/// The `Preferred` algorithms of a connection: russh's defaults with [`preferred_ciphers`].
pub(crate) fn preferred(host_aes: bool) -> russh::Preferred {
    russh::Preferred {
        cipher: Cow::Owned(preferred_ciphers(deployer_has_aes(), host_aes)),
        ..russh::Preferred::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[cipher::Name]) -> Vec<&str> {
        v.iter().map(|n| n.as_ref()).collect()
    }

    #[test]
    fn aes_gcm_first_only_when_both_sides_have_aes() {
        let both = preferred_ciphers(true, true);
        assert_eq!(
            names(&both)[..3],
            [
                "aes256-gcm@openssh.com",
                "aes128-gcm@openssh.com",
                "chacha20-poly1305@openssh.com"
            ]
        );
        for (d, h) in [(true, false), (false, true), (false, false)] {
            let v = preferred_ciphers(d, h);
            assert_eq!(names(&v)[0], "chacha20-poly1305@openssh.com", "{d} {h}");
            assert!(names(&v).contains(&"aes256-gcm@openssh.com"));
        }
        // The same set either way: only the order changes.
        let mut a = names(&both);
        let neither = preferred_ciphers(false, false);
        let mut b = names(&neither);
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }
}
