//! TFTP packets (RFC 1350) with option extension (RFC 2347): parsing never panics on any input.

use std::collections::BTreeMap;

pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;
pub const OP_DATA: u16 = 3;
pub const OP_ACK: u16 = 4;
pub const OP_ERROR: u16 = 5;
pub const OP_OACK: u16 = 6;

/// RFC 1350 / 2347 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    UnknownTransferId = 5,
    OptionNegotiation = 8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// A read request: file name, mode, and options (lowercased names).
    Read {
        filename: String,
        mode: String,
        options: BTreeMap<String, String>,
    },
    Write {
        filename: String,
    },
    Data {
        block: u16,
        data: Vec<u8>,
    },
    Ack {
        block: u16,
    },
    Error {
        code: u16,
        message: String,
    },
    OptionAck {
        options: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet too short")]
    TooShort,
    #[error("unknown opcode {0}")]
    Opcode(u16),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

fn strings(bytes: &[u8]) -> Result<Vec<String>, PacketError> {
    let Some(body) = bytes.strip_suffix(&[0]) else {
        return Err(PacketError::Malformed("fields are not NUL-terminated"));
    };
    body.split(|&b| b == 0)
        .map(|field| {
            std::str::from_utf8(field)
                .map(str::to_string)
                .map_err(|_| PacketError::Malformed("field is not UTF-8"))
        })
        .collect()
}

impl Packet {
    pub fn parse(bytes: &[u8]) -> Result<Packet, PacketError> {
        if bytes.len() < 4 {
            return Err(PacketError::TooShort);
        }
        let opcode = u16::from_be_bytes([bytes[0], bytes[1]]);
        let rest = &bytes[2..];
        let word = u16::from_be_bytes([rest[0], rest[1]]);
        match opcode {
            OP_RRQ | OP_WRQ => {
                let fields = strings(rest)?;
                if fields.len() < 2 || fields.len() % 2 != 0 {
                    return Err(PacketError::Malformed(
                        "request needs a file name, a mode and option pairs",
                    ));
                }
                let filename = fields[0].clone();
                if opcode == OP_WRQ {
                    return Ok(Packet::Write { filename });
                }
                let options = fields[2..]
                    .chunks(2)
                    .map(|pair| (pair[0].to_ascii_lowercase(), pair[1].clone()))
                    .collect();
                Ok(Packet::Read {
                    filename,
                    mode: fields[1].to_ascii_lowercase(),
                    options,
                })
            }
            OP_DATA => Ok(Packet::Data {
                block: word,
                data: rest[2..].to_vec(),
            }),
            OP_ACK => Ok(Packet::Ack { block: word }),
            OP_ERROR => {
                let message = rest[2..].split(|&b| b == 0).next().unwrap_or_default();
                Ok(Packet::Error {
                    code: word,
                    message: String::from_utf8_lossy(message).into_owned(),
                })
            }
            OP_OACK => {
                let fields = strings(rest)?;
                let options = fields
                    .chunks(2)
                    .filter(|p| p.len() == 2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect();
                Ok(Packet::OptionAck { options })
            }
            other => Err(PacketError::Opcode(other)),
        }
    }
}

/// A DATA packet into `buf` (reused between sends).
pub fn data(buf: &mut Vec<u8>, block: u16, payload: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&OP_DATA.to_be_bytes());
    buf.extend_from_slice(&block.to_be_bytes());
    buf.extend_from_slice(payload);
}

pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(5 + message.len());
    buf.extend_from_slice(&OP_ERROR.to_be_bytes());
    buf.extend_from_slice(&(code as u16).to_be_bytes());
    buf.extend_from_slice(message.as_bytes());
    buf.push(0);
    buf
}

pub fn oack(options: &[(&str, String)]) -> Vec<u8> {
    let mut buf = OP_OACK.to_be_bytes().to_vec();
    for (name, value) in options {
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        buf.extend_from_slice(value.as_bytes());
        buf.push(0);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_with_options() {
        let raw = b"\x00\x01undionly.kpxe\0octet\0TSIZE\x000\x00blksize\x001468\0";
        let Ok(Packet::Read {
            filename,
            mode,
            options,
        }) = Packet::parse(raw)
        else {
            panic!("not a read")
        };
        assert_eq!(
            (filename.as_str(), mode.as_str()),
            ("undionly.kpxe", "octet")
        );
        assert_eq!(options.get("tsize").map(String::as_str), Some("0"));
        assert_eq!(options.get("blksize").map(String::as_str), Some("1468"));
        assert_eq!(
            Packet::parse(b"\x00\x04\x01\x02"),
            Ok(Packet::Ack { block: 258 })
        );
        assert_eq!(
            Packet::parse(b"\x00\x05\x00\x08abort\0"),
            Ok(Packet::Error {
                code: 8,
                message: "abort".into()
            })
        );
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        for raw in [
            &b""[..],
            b"\x00",
            b"\x00\x01",
            b"\x00\x01a",
            b"\x00\x01a\0",
            b"\x00\x01a\0b",
            b"\x00\x09abcd",
            b"\x00\x01\xff\xfe\0octet\0",
            b"\x00\x01a\0octet\0blksize\0",
        ] {
            assert!(Packet::parse(raw).is_err(), "{raw:?}");
        }
        // Every prefix of a valid packet, and random-ish bytes, parse or fail cleanly.
        let valid = b"\x00\x01file\0octet\0blksize\x00512\x00tsize\x000\0";
        for end in 0..valid.len() {
            let _ = Packet::parse(&valid[..end]);
        }
        let mut seed = 0x2545_f491_u32;
        for _ in 0..20_000 {
            let len = (seed % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed % 7) as u8
                })
                .collect();
            let _ = Packet::parse(&bytes);
        }
    }
}

/// The TFTP packet decoder under generated input, run by every `cargo test` for a bounded
/// number of cases (`WULF_FUZZ_CASES`, 20,000 each by default): arbitrary bytes, requests with
/// arbitrary fields, and valid requests cut or corrupted anywhere. It must never panic, and
/// what it accepts must be what was sent.
#[cfg(test)]
pub(crate) mod fuzz {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn config() -> ProptestConfig {
        let cases = std::env::var("WULF_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A NUL-free field (what a request field can be).
    fn field() -> impl Strategy<Value = String> {
        "[^\u{0}]{0,40}"
    }

    fn request(opcode: u16, filename: &str, mode: &str, options: &[(String, String)]) -> Vec<u8> {
        let mut packet = opcode.to_be_bytes().to_vec();
        for f in [filename, mode]
            .into_iter()
            .chain(options.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))
        {
            packet.extend_from_slice(f.as_bytes());
            packet.push(0);
        }
        packet
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Packet::parse(&bytes);
        }

        #[test]
        fn requests_round_trip_and_negotiate_within_limits(
            filename in field(),
            mode in field(),
            options in proptest::collection::vec((field(), field()), 0..8),
            size in any::<u64>(),
        ) {
            let packet = request(OP_RRQ, &filename, &mode, &options);
            let parsed = Packet::parse(&packet);
            prop_assert!(parsed.is_ok(), "{parsed:?}");
            if let Ok(Packet::Read { filename: f, mode: m, options: o }) = parsed {
                prop_assert_eq!(f, filename);
                prop_assert_eq!(m, mode.to_ascii_lowercase());
                for (k, v) in &options {
                    // A later duplicate wins.
                    let last = options.iter().rev().find(|(k2, _)| k2.eq_ignore_ascii_case(k));
                    prop_assert_eq!(o.get(&k.to_ascii_lowercase()), last.map(|(_, v2)| v2));
                    let _ = v;
                }
                let limits = crate::tftp::TftpOptions::default();
                let n = crate::tftp::negotiate(&o, size, limits);
                prop_assert!((8..=usize::from(limits.max_blksize)).contains(&n.blksize) || n.blksize == 512);
                prop_assert!((1..=u64::from(limits.max_windowsize)).contains(&n.windowsize));
                prop_assert!(n.timeout >= std::time::Duration::from_secs(1));
                prop_assert!(n.timeout <= std::time::Duration::from_secs(crate::tftp::MAX_CLIENT_TIMEOUT));
            }
        }

        #[test]
        fn cut_or_corrupted_requests_never_panic(
            options in proptest::collection::vec((field(), field()), 0..6),
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let mut packet = request(OP_RRQ, "undionly.kpxe", "octet", &options);
            for (at, byte) in flips {
                let i = at.index(packet.len());
                packet[i] = byte;
            }
            let end = cut.index(packet.len() + 1);
            let _ = Packet::parse(&packet[..end]);
        }
    }
}
