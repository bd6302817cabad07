//! The agent protocol, defined once for both ends: the node's credential, how a request is
//! signed, how a response body is signed, and the boot report.
//!
//! A node's credential is an HMAC of the node id under the server's agent key; the server
//! derives it when it renders the node's system overlay (which delivers it, root-only) and when
//! it checks a request, so it stores nothing per node. The credential never crosses the network
//! again: a request carries the node id, the time and an HMAC of the method, path, time and the
//! headers that say what the node holds and booted; every answer (a runtime overlay or "not
//! modified") comes back with an HMAC of the request's signature, the status, the ETag, the boot
//! report and the body's SHA-256. So another node cannot sign as this one, and nobody on the wire
//! can alter or replay an answer, nor edit a request's headers. The traffic is not encrypted:
//! whoever sees the provisioning network sees the runtime overlay, as with Warewulf.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The runtime overlay, long-polled: `?wait=<seconds>` holds a request whose `If-None-Match`
/// is current until the overlay changes or the time is up (then 304).
pub const RUNTIME_PATH: &str = "/agent/v1/runtime";
/// The `Authorization` scheme.
pub const SCHEME: &str = "Wulf-Agent";
/// Response header: HMAC of the body's SHA-256 under the node's credential.
pub const SIGNATURE_HEADER: &str = "x-wulf-signature";
/// Request and response header: the kernel, image and system overlay the node booted.
pub const BOOTED_HEADER: &str = "x-wulf-booted";
/// Request header: the kernel's boot id (`/proc/sys/kernel/random/boot_id`), new each boot.
pub const BOOT_ID_HEADER: &str = "x-wulf-boot-id";
/// How far a request's time may be from the server's.
pub const MAX_SKEW_SECS: u64 = 300;
/// The longest `wait` the server honours.
pub const MAX_WAIT_SECS: u64 = 300;

/// A node's secret, shared by the node and the server.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential([u8; 32]);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(********)")
    }
}

/// HMAC-SHA256 under `key` of `parts`, each ended by a newline.
fn keyed(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        unreachable!("HMAC-SHA256 accepts any key length")
    };
    for part in parts {
        mac.update(part);
        mac.update(b"\n");
    }
    mac
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    keyed(key, parts).finalize().into_bytes().into()
}

/// Whether `signature` (hex) is the MAC of `parts` under `key`, compared in constant time.
fn verifies(key: &[u8], parts: &[&[u8]], signature: &str) -> bool {
    hex::decode(signature.trim()).is_ok_and(|sig| keyed(key, parts).verify_slice(&sig).is_ok())
}

impl Credential {
    /// The credential of `node` under the server's agent key.
    pub fn derive(agent_key: &[u8], node: &str) -> Credential {
        Credential(mac(agent_key, &[b"wulf-agent credential", node.as_bytes()]))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads the hex form (surrounding whitespace allowed).
    pub fn from_hex(text: &str) -> Option<Credential> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(Credential(bytes.try_into().ok()?))
    }

    /// The signature of an answer to the request signed `request`.
    pub fn sign_response(&self, answer: &Answer<'_>) -> String {
        let (status, digest) = (answer.status.to_string(), Sha256::digest(answer.body));
        hex::encode(mac(&self.0, &answer.parts(&status, &digest)))
    }

    /// Whether `signature` is this credential's for `answer`.
    pub fn verify_response(&self, answer: &Answer<'_>, signature: &str) -> bool {
        let (status, digest) = (answer.status.to_string(), Sha256::digest(answer.body));
        verifies(&self.0, &answer.parts(&status, &digest), signature)
    }
}

/// What an answer's signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The signature of the request it answers ([`Authorization::signature`]).
    pub request: &'a str,
    pub status: u16,
    /// The `ETag` header as sent (empty when none).
    pub etag: &'a str,
    /// The boot report header as sent (empty when none).
    pub booted: &'a str,
    pub body: &'a [u8],
}

impl Answer<'_> {
    /// What is signed: these fields, the status as text and the body's digest.
    fn parts<'a>(&'a self, status: &'a str, digest: &'a [u8]) -> [&'a [u8]; 6] {
        [
            b"answer",
            self.request.as_bytes(),
            status.as_bytes(),
            self.etag.as_bytes(),
            self.booted.as_bytes(),
            digest,
        ]
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed(&'static str),
    /// The request's time is this many seconds off.
    Skewed(u64),
    BadSignature,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => write!(f, "no `Authorization: {SCHEME} ...` header"),
            AuthError::Malformed(what) => write!(f, "a malformed {SCHEME} authorization: {what}"),
            AuthError::Skewed(by) => write!(
                f,
                "the request's time is {by} s off the server's (at most {MAX_SKEW_SECS}): set the node's clock"
            ),
            AuthError::BadSignature => {
                write!(f, "the signature does not match the node's credential")
            }
        }
    }
}

impl std::error::Error for AuthError {}

/// The request headers a signature covers: what the node holds and what it booted, as sent
/// (empty when not sent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Covered<'a> {
    pub if_none_match: &'a str,
    pub booted: &'a str,
}

/// A signed request: `Authorization: Wulf-Agent node=<id>, ts=<unix seconds>, sig=<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub node: String,
    pub ts: u64,
    sig: String,
}

impl Authorization {
    pub fn sign(
        credential: &Credential,
        node: &str,
        method: &str,
        target: &str,
        ts: u64,
        covered: Covered<'_>,
    ) -> Self {
        let ts_text = ts.to_string();
        Authorization {
            node: node.to_owned(),
            ts,
            sig: hex::encode(mac(
                &credential.0,
                &request_parts(node, method, target, &ts_text, covered),
            )),
        }
    }

    /// The signature, which an answer's signature covers.
    pub fn signature(&self) -> &str {
        &self.sig
    }

    pub fn header_value(&self) -> String {
        format!(
            "{SCHEME} node={}, ts={}, sig={}",
            self.node, self.ts, self.sig
        )
    }

    pub fn parse(value: &str) -> Result<Authorization, AuthError> {
        let rest = value
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or(AuthError::Malformed("not the Wulf-Agent scheme"))?;
        let (mut node, mut ts, mut sig) = (None, None, None);
        for part in rest.split(',') {
            let (key, value) = part
                .trim()
                .split_once('=')
                .ok_or(AuthError::Malformed("a part without `=`"))?;
            match key {
                "node" => node = Some(value.to_owned()),
                "ts" => ts = Some(value.parse().map_err(|_| AuthError::Malformed("ts"))?),
                "sig" => sig = Some(value.to_owned()),
                _ => return Err(AuthError::Malformed("an unknown part")),
            }
        }
        Ok(Authorization {
            node: node
                .filter(|n| !n.is_empty())
                .ok_or(AuthError::Malformed("no node"))?,
            ts: ts.ok_or(AuthError::Malformed("no ts"))?,
            sig: sig.ok_or(AuthError::Malformed("no sig"))?,
        })
    }

    /// Checks the signature of `method target` and the covered headers under `credential`,
    /// and the time against `now`.
    pub fn verify(
        &self,
        credential: &Credential,
        method: &str,
        target: &str,
        now: u64,
        covered: Covered<'_>,
    ) -> Result<(), AuthError> {
        let skew = now.abs_diff(self.ts);
        if skew > MAX_SKEW_SECS {
            return Err(AuthError::Skewed(skew));
        }
        let ts_text = self.ts.to_string();
        let parts = request_parts(&self.node, method, target, &ts_text, covered);
        if verifies(&credential.0, &parts, &self.sig) {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

/// What a request's signature covers.
fn request_parts<'a>(
    node: &'a str,
    method: &'a str,
    target: &'a str,
    ts: &'a str,
    covered: Covered<'a>,
) -> [&'a [u8]; 7] {
    [
        b"request",
        node.as_bytes(),
        method.as_bytes(),
        target.as_bytes(),
        ts.as_bytes(),
        covered.if_none_match.as_bytes(),
        covered.booted.as_bytes(),
    ]
}

/// What a node booted, by the ETags the server sent: `kernel=<etag>, image=<etag>,
/// system=<etag>` (an unknown one is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Booted {
    pub kernel: String,
    pub image: String,
    pub system: String,
}

impl Booted {
    pub fn header_value(&self) -> String {
        format!(
            "kernel={}, image={}, system={}",
            self.kernel, self.image, self.system
        )
    }

    pub fn parse(value: &str) -> Option<Booted> {
        let mut booted = Booted::default();
        for part in value.split(',') {
            let (key, value) = part.trim().split_once('=')?;
            let value = value.trim().to_owned();
            if !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return None;
            }
            match key {
                "kernel" => booted.kernel = value,
                "image" => booted.image = value,
                "system" => booted.system = value,
                _ => return None,
            }
        }
        Some(booted)
    }

    pub fn is_empty(&self) -> bool {
        self.kernel.is_empty() && self.image.is_empty() && self.system.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_only_as_signed() {
        let key = [7u8; 32];
        let n1 = Credential::derive(&key, "n1");
        let n2 = Credential::derive(&key, "n2");
        assert_ne!(n1, n2);
        assert_eq!(
            Credential::from_hex(&format!("{}\n", n1.to_hex())),
            Some(n1.clone())
        );
        let target = "/agent/v1/runtime?wait=55";
        let held = Covered {
            if_none_match: "\"ab\"",
            booted: "kernel=k, image=i, system=s",
        };
        let auth = Authorization::sign(&n1, "n1", "GET", target, 1000, held);
        let parsed = Authorization::parse(&auth.header_value()).unwrap();
        assert_eq!(parsed, auth);
        assert_eq!(parsed.verify(&n1, "GET", target, 1100, held), Ok(()));
        let bad = Err(AuthError::BadSignature);
        assert_eq!(
            parsed.verify(&n2, "GET", target, 1100, held),
            bad,
            "another node's credential"
        );
        assert_eq!(
            parsed.verify(&n1, "GET", "/agent/v1/runtime", 1100, held),
            bad,
            "another target"
        );
        let edited = Covered {
            if_none_match: "\"cd\"",
            ..held
        };
        assert_eq!(
            parsed.verify(&n1, "GET", target, 1100, edited),
            bad,
            "an edited header"
        );
        assert_eq!(
            parsed.verify(&n1, "GET", target, 2000, held),
            Err(AuthError::Skewed(1000))
        );
        // Claiming to be n2 with n1's credential.
        let forged =
            Authorization::parse(&auth.header_value().replace("node=n1", "node=n2")).unwrap();
        assert_eq!(forged.verify(&n2, "GET", target, 1000, held), bad);
        assert!(matches!(
            Authorization::parse("Bearer x"),
            Err(AuthError::Malformed(_))
        ));
        assert!(Authorization::parse("Wulf-Agent node=n1, ts=x, sig=00").is_err());
    }

    #[test]
    fn answers_are_bound_to_their_request_and_node() {
        let n1 = Credential::derive(b"key", "n1");
        let answer = Answer {
            request: "aa",
            status: 200,
            etag: "\"e1\"",
            booted: "kernel=k, image=i, system=s",
            body: b"overlay bytes",
        };
        let sig = n1.sign_response(&answer);
        assert!(n1.verify_response(&answer, &sig));
        assert!(!Credential::derive(b"key", "n2").verify_response(&answer, &sig));
        for changed in [
            Answer {
                body: b"overlay bytez",
                ..answer
            },
            Answer {
                request: "bb",
                ..answer
            },
            Answer {
                status: 304,
                body: b"",
                ..answer
            },
            Answer {
                etag: "\"e2\"",
                ..answer
            },
            Answer {
                booted: "",
                ..answer
            },
        ] {
            assert!(!n1.verify_response(&changed, &sig), "{changed:?}");
        }
    }

    #[test]
    fn the_boot_report_round_trips() {
        let booted = Booted {
            kernel: "ab12".into(),
            image: "cd34".into(),
            system: String::new(),
        };
        assert_eq!(Booted::parse(&booted.header_value()), Some(booted));
        assert_eq!(Booted::parse("kernel=a b"), None);
        assert_eq!(Booted::parse("shell=x"), None);
    }
}
