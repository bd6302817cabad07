//! Support for unit-testing plugin logic natively (`cargo test` on the host target).

use std::cell::RefCell;

thread_local! {
    static CONFIG: RefCell<String> = RefCell::new("{}".to_string());
}

/// Sets what [`crate::config`] returns on this thread in native builds: a JSON object, as the
/// host would pass it.
pub fn set_config(json: serde_json::Value) {
    CONFIG.with(|c| *c.borrow_mut() = json.to_string());
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn config_json() -> String {
    CONFIG.with(|c| c.borrow().clone())
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_round_trips_natively() {
        #[derive(serde::Deserialize)]
        struct C {
            domain: String,
        }
        super::set_config(serde_json::json!({"domain": "cluster.local"}));
        let c: C = crate::config().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.domain, "cluster.local");
        super::set_config(serde_json::json!({"domain": 3}));
        assert!(matches!(
            crate::config::<C>(),
            Err(crate::PluginError::Config(_))
        ));
    }
}
