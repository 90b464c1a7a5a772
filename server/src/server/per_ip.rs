//! The per-address connection cap (`http.max_connections_per_ip`), so one
//! client cannot take every connection permit. IPv6 clients are counted per
//! /64, the block one host usually holds; IPv4-mapped IPv6 peers as their
//! IPv4 address. Trusted proxies are not capped: they carry many clients.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
};

use ipnet::IpNet;

pub struct PerIp {
    /// 0: no cap.
    max: usize,
    uncapped: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection counted against its address; released on drop.
pub struct Slot {
    owner: Arc<PerIp>,
    /// `None` when the address is not counted.
    key: Option<IpAddr>,
}

impl PerIp {
    pub fn new(max: usize, uncapped: Vec<IpNet>) -> PerIp {
        PerIp {
            max,
            uncapped,
            open: Mutex::default(),
        }
    }

    /// A slot for a connection from `ip`, or `None` when its address already
    /// has `max` open.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        let uncounted = Slot {
            owner: self.clone(),
            key: None,
        };
        if self.max == 0 || self.uncapped.iter().any(|net| net.contains(&ip)) {
            return Some(uncounted);
        }
        let key = counting_key(ip);
        // A poisoned map cannot count: serve rather than refuse everyone.
        let Ok(mut open) = self.open.lock() else {
            return Some(uncounted);
        };
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            owner: self.clone(),
            key: Some(key),
        })
    }

    #[cfg(test)]
    fn counted(&self) -> usize {
        self.open.lock().map(|open| open.len()).unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let Ok(mut open) = self.owner.open.lock() else {
            return;
        };
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

fn counting_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = v6.to_bits() & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from_bits(prefix))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_gets_max_connections_and_a_freed_one_is_reusable() {
        let cap = Arc::new(PerIp::new(2, vec![]));
        let a = cap.try_acquire(ip("192.0.2.1")).unwrap();
        let _b = cap.try_acquire(ip("192.0.2.1")).unwrap();
        assert!(cap.try_acquire(ip("192.0.2.1")).is_none());
        // Another address is counted on its own.
        let _c = cap.try_acquire(ip("192.0.2.2")).unwrap();
        drop(a);
        assert!(cap.try_acquire(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn addresses_with_nothing_open_are_forgotten() {
        let cap = Arc::new(PerIp::new(3, vec![]));
        let slots: Vec<_> = (1..=50)
            .map(|i| cap.try_acquire(ip(&format!("198.51.100.{i}"))).unwrap())
            .collect();
        assert_eq!(cap.counted(), 50);
        drop(slots);
        assert_eq!(cap.counted(), 0);
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let cap = Arc::new(PerIp::new(1, vec![]));
        let _a = cap.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(cap.try_acquire(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(cap.try_acquire(ip("2001:db8:1:3::1")).is_some());
        let _v4 = cap.try_acquire(ip("203.0.113.7")).unwrap();
        assert!(cap.try_acquire(ip("::ffff:203.0.113.7")).is_none());
    }

    #[test]
    fn zero_means_no_cap_and_trusted_proxies_are_not_capped() {
        let off = Arc::new(PerIp::new(0, vec![]));
        let slots: Vec<_> = (0..100)
            .map(|_| off.try_acquire(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(slots.len(), 100);
        assert_eq!(off.counted(), 0);

        let cap = Arc::new(PerIp::new(1, vec!["10.0.0.0/8".parse().unwrap()]));
        let _p1 = cap.try_acquire(ip("10.1.1.1")).unwrap();
        let _p2 = cap.try_acquire(ip("10.1.1.1")).unwrap();
        let _c = cap.try_acquire(ip("192.0.2.1")).unwrap();
        assert!(cap.try_acquire(ip("192.0.2.1")).is_none());
    }
}
