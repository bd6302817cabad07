//! Hardware (MAC) addresses: accepted with `:` or `-`, any case; stored lowercase with colons.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HwAddr([u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a MAC address; expected six hex pairs like aa:bb:cc:dd:ee:ff")]
pub struct HwAddrError {
    pub value: String,
}

impl From<[u8; 6]> for HwAddr {
    /// An address as it travels on the wire (DHCP's `chaddr`).
    fn from(bytes: [u8; 6]) -> HwAddr {
        HwAddr(bytes)
    }
}

impl HwAddr {
    pub fn parse(text: &str) -> Result<HwAddr, HwAddrError> {
        let err = || HwAddrError {
            value: text.to_string(),
        };
        let mut bytes = [0u8; 6];
        let mut parts = text.split([':', '-']);
        for byte in &mut bytes {
            let part = parts
                .next()
                .filter(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(err)?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(HwAddr(bytes))
    }
}

impl fmt::Display for HwAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl serde::Serialize for HwAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HwAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        HwAddr::parse(&text).map_err(|_| serde::de::Error::custom(HWADDR_RULE))
    }
}

/// What a MAC address must look like.
pub const HWADDR_RULE: &str = "not a MAC address; expected six hex pairs like aa:bb:cc:dd:ee:ff";

impl std::str::FromStr for HwAddr {
    type Err = HwAddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HwAddr::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators_and_any_case() {
        let canonical = "aa:bb:cc:0d:ee:ff";
        for text in ["AA:BB:CC:0D:EE:FF", "aa-bb-cc-0d-ee-ff", canonical] {
            assert_eq!(
                HwAddr::parse(text).map(|h| h.to_string()).as_deref(),
                Ok(canonical)
            );
        }
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:f",
            "gg:bb:cc:dd:ee:ff",
            "aabb.ccdd.eeff",
            "+a:bb:cc:dd:ee:ff",
        ] {
            assert!(HwAddr::parse(bad).is_err(), "{bad}");
        }
    }
}
