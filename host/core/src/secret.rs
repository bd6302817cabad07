//! Values that must never be shown: BMC passwords.

use serde::{Deserialize, Serialize};

/// A secret string. The store keeps it as written (Warewulf keeps BMC passwords in
/// `nodes.conf` too); everything that shows a record shows [`Secret::MASK`] instead, and
/// `Debug` never prints it, so a record in a log line or an error cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// What a shown record carries in place of a secret.
    pub const MASK: &'static str = "********";

    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that hands it to a BMC.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The mask, to show in place of this secret.
    pub fn masked() -> Secret {
        Secret(Secret::MASK.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Secret::MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret_and_serde_keeps_it() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "********");
        assert_eq!(
            serde_json::to_string(&secret).unwrap_or_default(),
            "\"hunter2\""
        );
        assert_eq!(secret.expose(), "hunter2");
    }
}
