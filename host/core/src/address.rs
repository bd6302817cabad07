//! Typed addresses in records: IPv4 netmasks, and how IP fields read from text with messages
//! that say what was expected (the record and field are added by whoever reads the record).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 netmask: contiguous ones, then zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Netmask(Ipv4Addr);

pub const NETMASK_RULE: &str = "not a netmask like 255.255.255.0";
pub const IPV4_RULE: &str = "not an IPv4 address";
pub const IPV6_RULE: &str = "not an IPv6 address";

impl Netmask {
    pub fn parse(text: &str) -> Option<Netmask> {
        Netmask::from_addr(text.parse().ok()?)
    }

    /// `addr` as a netmask, if its ones are contiguous.
    pub fn from_addr(addr: Ipv4Addr) -> Option<Netmask> {
        let bits = u32::from(addr);
        (bits.leading_ones() + bits.trailing_zeros() == 32).then_some(Netmask(addr))
    }

    pub fn addr(self) -> Ipv4Addr {
        self.0
    }

    /// The prefix length: 24 for 255.255.255.0.
    pub fn prefix(self) -> u32 {
        u32::from(self.0).leading_ones()
    }
}

impl fmt::Display for Netmask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for Netmask {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Netmask::parse(s).ok_or(NETMASK_RULE)
    }
}

impl Serialize for Netmask {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Netmask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Netmask::parse(&text).ok_or_else(|| serde::de::Error::custom(NETMASK_RULE))
    }
}

/// `deserialize_with` for `Option<Ipv4Addr>` fields: the message says what was expected.
pub(crate) fn ipv4<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Addr>, D::Error> {
    d.deserialize_option(Optional::<Ipv4Addr>::new(IPV4_RULE))
}

/// `deserialize_with` for `Option<Ipv6Addr>` fields.
pub(crate) fn ipv6<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv6Addr>, D::Error> {
    d.deserialize_option(Optional::<Ipv6Addr>::new(IPV6_RULE))
}

/// An optional address written as a string, parsed from the borrowed text (no copy per
/// address: an inventory holds tens of thousands); `rule` is the error for a bad one.
struct Optional<T> {
    rule: &'static str,
    kind: std::marker::PhantomData<T>,
}

impl<T> Optional<T> {
    fn new(rule: &'static str) -> Self {
        Optional {
            rule,
            kind: std::marker::PhantomData,
        }
    }
}

impl<'de, T: std::str::FromStr> serde::de::Visitor<'de> for Optional<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an address as a string")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        text.parse().map(Some).map_err(|_| E::custom(self.rule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_are_contiguous() {
        assert_eq!(Netmask::parse("255.255.0.0").map(Netmask::prefix), Some(16));
        assert_eq!(Netmask::parse("0.0.0.0").map(Netmask::prefix), Some(0));
        assert_eq!(Netmask::parse("255.0.255.0"), None);
        assert_eq!(Netmask::parse("nonsense"), None);
    }
}
