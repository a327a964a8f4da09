//! Address allocation from a cluster's service and pod ranges.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use parking_lot::Mutex;

/// An allocator over a set of ranges (at most one per address family in practice).
#[derive(Debug, Clone)]
pub struct Ipam {
    ranges: Vec<IpNet>,
    used: HashSet<IpAddr>,
    cursor: Vec<u128>,
}

/// The first offsets in each range are reserved (network address, the `kubernetes` Service).
const FIRST: u128 = 10;

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(std::net::Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(n))
    }
}

impl Ipam {
    /// An allocator over these ranges.
    pub fn new(ranges: Vec<IpNet>) -> Self {
        let cursor = vec![FIRST; ranges.len()];
        Self {
            ranges,
            used: HashSet::new(),
            cursor,
        }
    }

    /// Whether the allocator has a range of this family.
    pub fn has_family(&self, v4: bool) -> bool {
        self.ranges.iter().any(|r| matches!(r, IpNet::V4(_)) == v4)
    }

    /// The next free address of a family.
    pub fn allocate(&mut self, v4: bool) -> Option<IpAddr> {
        let (i, range) = self
            .ranges
            .iter()
            .enumerate()
            .find(|(_, r)| matches!(r, IpNet::V4(_)) == v4)?;
        let base = to_u128(range.network());
        let size: u128 = 1u128 << (u32::from(range.max_prefix_len() - range.prefix_len())).min(64);
        let span = size.saturating_sub(FIRST + 1);
        for step in 0..span {
            let off = FIRST + (self.cursor[i] - FIRST + step) % span.max(1);
            let ip = from_u128(v4, base + off);
            if !self.used.contains(&ip) {
                self.used.insert(ip);
                self.cursor[i] = off + 1;
                if self.cursor[i] >= FIRST + span {
                    self.cursor[i] = FIRST;
                }
                return Some(ip);
            }
        }
        None
    }

    /// Reserves a chosen address; `Err` says why it cannot be had.
    pub fn reserve(&mut self, ip: IpAddr) -> Result<(), &'static str> {
        if !self.ranges.iter().any(|r| r.contains(&ip)) {
            return Err("provided IP is not in the valid range");
        }
        if !self.used.insert(ip) {
            return Err("provided IP is already allocated");
        }
        Ok(())
    }

    /// Returns an address.
    pub fn release(&mut self, ip: IpAddr) {
        self.used.remove(&ip);
    }
}

/// A cluster's two allocators: Service cluster IPs and Pod IPs.
#[derive(Debug)]
pub(crate) struct Addresses {
    service: Mutex<Ipam>,
    pod: Mutex<Ipam>,
}

impl Addresses {
    pub(crate) fn new(service_ranges: Vec<IpNet>, pod_ranges: Vec<IpNet>) -> Self {
        Self {
            service: Mutex::new(Ipam::new(service_ranges)),
            pod: Mutex::new(Ipam::new(pod_ranges)),
        }
    }

    pub(crate) fn allocate_service_ip(&self, v4: bool) -> Option<IpAddr> {
        self.service.lock().allocate(v4)
    }

    pub(crate) fn reserve_service_ip(&self, ip: IpAddr) -> Result<(), &'static str> {
        self.service.lock().reserve(ip)
    }

    pub(crate) fn service_family_available(&self, v4: bool) -> bool {
        self.service.lock().has_family(v4)
    }

    pub(crate) fn allocate_pod_ip(&self, v4: bool) -> Option<IpAddr> {
        self.pod.lock().allocate(v4)
    }

    pub(crate) fn pod_family_available(&self, v4: bool) -> bool {
        self.pod.lock().has_family(v4)
    }

    /// Gives back addresses: `(true, ip)` a Service's, `(false, ip)` a Pod's.
    pub(crate) fn release(&self, addresses: &[(bool, IpAddr)]) {
        for (service, ip) in addresses {
            if *service {
                self.service.lock().release(*ip);
            } else {
                self.pod.lock().release(*ip);
            }
        }
    }
}
