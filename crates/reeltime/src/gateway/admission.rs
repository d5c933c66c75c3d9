//! Caps on sockets that are open but have not sent their token yet. Such a
//! socket costs an attacker nothing but a handshake, so without these a
//! flood holds thousands of descriptors for the whole auth timeout each.
//! A socket waits from its upgrade until its first message arrives; one that
//! carries `?token=` is verified at once and never waits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::net::limit_key;

/// Waiting sockets on this node, in total and per client address.
pub struct Admission {
    max_waiting: usize,
    max_per_address: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Why a socket may not wait for its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitRefused {
    #[error("too many sockets waiting for a token")]
    Total,
    #[error("too many sockets waiting for a token from this address")]
    PerAddress,
}

/// One waiting socket; dropping it (token received, or socket gone) frees
/// its place.
pub struct Waiting {
    admission: Arc<Admission>,
    key: IpAddr,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_address.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.per_address.remove(&self.key);
            }
        }
    }
}

impl Admission {
    pub fn new(max_waiting: usize, max_per_address: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_waiting,
            max_per_address,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        match self.counts.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A place for a socket of `client` to wait for its token, if both caps
    /// allow it.
    pub fn wait(self: &Arc<Self>, client: IpAddr) -> Result<Waiting, WaitRefused> {
        let key = limit_key(client);
        let mut counts = self.counts();
        if counts.total >= self.max_waiting {
            return Err(WaitRefused::Total);
        }
        let of_address = counts.per_address.entry(key).or_default();
        if *of_address >= self.max_per_address {
            return Err(WaitRefused::PerAddress);
        }
        *of_address += 1;
        counts.total += 1;
        Ok(Waiting {
            admission: Arc::clone(self),
            key,
        })
    }

    /// Sockets waiting now.
    pub fn waiting(&self) -> usize {
        self.counts().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn both_caps_hold_and_places_come_back() {
        let admission = Admission::new(3, 2);
        let a1 = admission.wait(ip("192.0.2.1")).unwrap();
        let _a2 = admission.wait(ip("192.0.2.1")).unwrap();
        assert_eq!(
            admission.wait(ip("192.0.2.1")).err(),
            Some(WaitRefused::PerAddress)
        );
        let _b1 = admission.wait(ip("192.0.2.2")).unwrap();
        assert_eq!(
            admission.wait(ip("192.0.2.3")).err(),
            Some(WaitRefused::Total)
        );
        assert_eq!(admission.waiting(), 3);
        drop(a1);
        assert_eq!(admission.waiting(), 2);
        assert!(admission.wait(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn one_ipv6_64_is_one_address() {
        let admission = Admission::new(10, 1);
        let _first = admission.wait(ip("2001:db8::1")).unwrap();
        assert_eq!(
            admission.wait(ip("2001:db8::2")).err(),
            Some(WaitRefused::PerAddress)
        );
    }
}
