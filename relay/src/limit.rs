//! Rate limits with lockout, as plain data the Durable Object stores in SQLite (so they hold
//! on `*.workers.dev`, where the cache API is not shared and a cache-based limit is a no-op).
//!
//! A fixed window counts attempts; separately, consecutive failures lock the key out for a
//! while. Both answer with the seconds to wait.

use serde::{Deserialize, Serialize};

/// One limit's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Window length.
    pub window_s: u64,
    /// Attempts allowed per window.
    pub max: u32,
    /// Consecutive failures that trigger a lockout (0 = never).
    pub max_failures: u32,
    /// Lockout length.
    pub lockout_s: u64,
}

/// Registrations per client IP.
pub const REGISTER: Policy = Policy {
    window_s: 3600,
    max: 20,
    max_failures: 10,
    lockout_s: 3600,
};
/// Pair-token redemptions per client IP; five bad tokens in a row lock that IP out of
/// redemption for 15 min.
pub const REDEEM: Policy = Policy {
    window_s: 600,
    max: 20,
    max_failures: 5,
    lockout_s: 900,
};
/// WebSocket connects per phone (a reconnect loop is cut off, a person never is).
pub const PHONE_CONNECT: Policy = Policy {
    window_s: 60,
    max: 60,
    max_failures: 10,
    lockout_s: 300,
};
/// Authenticated calls by the device (connect, pair issue, phone list/revoke), counted only
/// once the bearer matched: nobody else's failures count against the owner.
pub const DEVICE: Policy = Policy {
    window_s: 60,
    max: 120,
    max_failures: 0,
    lockout_s: 0,
};
/// Calls with a device's or phone's bearer, per client IP: ten wrong bearers in a row lock
/// that IP (not the device, not the phone) out for five minutes.
pub const BEARER_PER_IP: Policy = Policy {
    window_s: 60,
    max: 240,
    max_failures: 10,
    lockout_s: 300,
};
/// Most phones one device may have paired at once.
pub const MAX_PHONES: usize = 64;
/// Most rate-limit rows one device's storage keeps (one per client IP that failed lately,
/// one per phone); past it, new keys are refused until old ones go idle.
pub const MAX_LIMIT_ROWS: usize = 4096;

/// The key a client address is limited under: IPv4 as it is, IPv6 by its /64 prefix.
pub fn client_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(v4) => v4.to_string(),
        Err(_) => "unknown".into(),
    }
}

/// A key's state, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Start of the current window (unix s).
    pub window_start: u64,
    /// Attempts in it.
    pub count: u32,
    /// Failures since the last success.
    pub failures: u32,
    /// Unix s until which every attempt is refused.
    pub locked_until: u64,
}

/// An attempt refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// Too many attempts in the window.
    #[error("too many requests: try again in {retry_after_s} s")]
    Rate {
        /// Seconds until the window resets.
        retry_after_s: u64,
    },
    /// Locked out after repeated failures.
    #[error("locked after repeated failures: try again in {retry_after_s} s")]
    Locked {
        /// Seconds until the lockout ends.
        retry_after_s: u64,
    },
}

impl Limited {
    /// Seconds to wait.
    pub fn retry_after_s(&self) -> u64 {
        match self {
            Limited::Rate { retry_after_s } | Limited::Locked { retry_after_s } => *retry_after_s,
        }
    }
}

impl Counter {
    /// Count an attempt at `now`, or refuse it (a refused attempt is not counted).
    pub fn attempt(&mut self, p: &Policy, now: u64) -> Result<(), Limited> {
        if now < self.locked_until {
            return Err(Limited::Locked {
                retry_after_s: self.locked_until - now,
            });
        }
        if now >= self.window_start.saturating_add(p.window_s) {
            self.window_start = now;
            self.count = 0;
        }
        if self.count >= p.max {
            return Err(Limited::Rate {
                retry_after_s: (self.window_start + p.window_s).saturating_sub(now).max(1),
            });
        }
        self.count += 1;
        Ok(())
    }

    /// The attempt failed (bad credential or token); enough in a row lock the key.
    pub fn failed(&mut self, p: &Policy, now: u64) {
        self.failures = self.failures.saturating_add(1);
        if p.max_failures > 0 && self.failures >= p.max_failures {
            self.locked_until = now + p.lockout_s;
            self.failures = 0;
        }
    }

    /// The attempt succeeded: the failure streak ends.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Whether this state carries nothing worth storing at `now`.
    pub fn idle(&self, p: &Policy, now: u64) -> bool {
        now >= self.locked_until
            && now >= self.window_start.saturating_add(p.window_s)
            && self.failures == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_keyed_by_address_ipv6_by_its_64() {
        assert_eq!(client_key("203.0.113.7"), "203.0.113.7");
        assert_eq!(
            client_key("2001:db8:1:2:aaaa::1"),
            client_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(client_key("2001:db8:1:2::1"), client_key("2001:db8:1:3::1"));
        assert_eq!(client_key("not an ip"), "unknown");
    }

    const P: Policy = Policy {
        window_s: 10,
        max: 3,
        max_failures: 2,
        lockout_s: 100,
    };

    #[test]
    fn window() {
        let mut c = Counter::default();
        for _ in 0..3 {
            assert_eq!(c.attempt(&P, 1000), Ok(()));
        }
        assert_eq!(c.attempt(&P, 1005), Err(Limited::Rate { retry_after_s: 5 }));
        assert_eq!(c.attempt(&P, 1010), Ok(()));
        assert!(!c.idle(&P, 1010));
        assert!(c.idle(&P, 1020));
    }

    #[test]
    fn lockout() {
        let mut c = Counter::default();
        assert_eq!(c.attempt(&P, 0), Ok(()));
        c.failed(&P, 0);
        c.succeeded();
        c.failed(&P, 1);
        assert_eq!(c.attempt(&P, 1), Ok(()));
        c.failed(&P, 1);
        let e = c.attempt(&P, 2);
        assert_eq!(e, Err(Limited::Locked { retry_after_s: 99 }));
        assert_eq!(e.map_err(|e| e.retry_after_s()), Err(99));
        assert_eq!(c.attempt(&P, 101), Ok(()));
        assert!(
            Limited::Rate { retry_after_s: 3 }
                .to_string()
                .contains("3 s")
        );
    }
}
