//! Redfish over HTTPS: `ComputerSystem.Reset` for power, `Boot.BootSourceOverrideTarget` =
//! `Pxe` once for a one-time netboot, `PowerState` for status.
//!
//! Each call opens a Redfish session (`SessionService/Sessions`, then `X-Auth-Token`) and
//! closes it after; a BMC without a session service (404/405/501, or 401/403 to the login
//! itself) gets HTTP Basic instead.
//! The whole call, every request of it, is bounded by the caller's timeout.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};
use wulf_core::bmc::{Bmc, BmcError, BmcReply, BmcTarget, ConsoleCommand, PowerAction, PowerState};
use wulf_core::node::RedfishScheme;

/// The Redfish driver: one HTTP client with certificate checks and one without (for nodes
/// whose record says `tls-verify = false`).
#[derive(Debug)]
pub struct Redfish {
    verifying: Client,
    trusting: Client,
}

impl Redfish {
    pub fn new() -> Result<Redfish, BmcError> {
        let build = |verify: bool| {
            Client::builder()
                .tls_danger_accept_invalid_certs(!verify)
                .user_agent(concat!("wulf/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| BmcError::Driver(format!("Redfish HTTP client: {e}")))
        };
        Ok(Redfish {
            verifying: build(true)?,
            trusting: build(false)?,
        })
    }

    fn connect<'a>(&'a self, target: &'a BmcTarget, timeout: Duration) -> Session<'a> {
        let client = if target.tls_verify {
            &self.verifying
        } else {
            &self.trusting
        };
        let scheme = match target.scheme {
            RedfishScheme::Https => "https",
            RedfishScheme::Http => "http",
        };
        let base = match target.port {
            Some(port) => format!("{scheme}://{}:{port}", target.address),
            None => format!("{scheme}://{}", target.address),
        };
        Session {
            client,
            target,
            base,
            deadline: Instant::now() + timeout,
            timeout,
            token: None,
        }
    }
}

/// One call's conversation with a BMC.
struct Session<'a> {
    client: &'a Client,
    target: &'a BmcTarget,
    base: String,
    deadline: Instant,
    timeout: Duration,
    /// The session token and the session's URL, when the BMC gave one.
    token: Option<(String, Option<String>)>,
}

impl Session<'_> {
    fn remaining(&self) -> Result<Duration, BmcError> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(BmcError::Timeout(self.timeout))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(&self, request: RequestBuilder) -> RequestBuilder {
        match (&self.token, &self.target.username) {
            (Some((token, _)), _) => request.header("X-Auth-Token", token),
            (None, Some(user)) => request.basic_auth(
                user,
                self.target.password.as_ref().map(|p| p.expose().to_owned()),
            ),
            (None, None) => request,
        }
    }

    fn send(&self, request: RequestBuilder) -> Result<Response, BmcError> {
        let remaining = self.remaining()?;
        request
            .timeout(remaining)
            .header("Accept", "application/json")
            .send()
            .map_err(|e| self.transport_error(&e))
    }

    fn transport_error(&self, error: &reqwest::Error) -> BmcError {
        if error.is_timeout() {
            return BmcError::Timeout(self.timeout);
        }
        let chain = error_chain(error);
        if chain.contains("certificate") || chain.contains("Certificate") {
            return BmcError::Tls(format!(
                "{}: {chain} (a self-signed BMC certificate: set ipmi.tls-verify = false for this node)",
                self.base
            ));
        }
        if error.is_connect() {
            return BmcError::Unreachable(format!("{}: {chain}", self.base));
        }
        BmcError::Refused(format!("{}: {chain}", self.base))
    }

    /// Opens a session when the BMC has a session service.
    fn login(&mut self) -> Result<(), BmcError> {
        let Some(user) = &self.target.username else {
            return Ok(());
        };
        let body = json!({
            "UserName": user,
            "Password": self.target.password.as_ref().map(|p| p.expose()).unwrap_or(""),
        });
        let response = self.send(
            self.client
                .post(self.url("/redfish/v1/SessionService/Sessions"))
                .json(&body),
        )?;
        match response.status() {
            status if status.is_success() => {
                let token = response
                    .headers()
                    .get("X-Auth-Token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let location = response
                    .headers()
                    .get("Location")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                self.token = token.map(|t| (t, location));
                Ok(())
            }
            // No session service, or one behind the BMC's Basic authentication (sushy-tools
            // answers 401 before it routes): Basic it is. A wrong password then fails on
            // the first request, as an authentication error.
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN => Ok(()),
            _ => Err(refusal(response)),
        }
    }

    fn logout(&mut self) {
        if let Some((token, Some(location))) = self.token.take() {
            let url = if location.starts_with("http") {
                location
            } else {
                self.url(&location)
            };
            let _ = self.send(self.client.delete(url).header("X-Auth-Token", token));
        }
    }

    fn get(&self, path: &str) -> Result<Value, BmcError> {
        let response = self.send(self.authed(self.client.get(self.url(path))))?;
        json_of(self, response)
    }

    fn write(&self, request: RequestBuilder) -> Result<(), BmcError> {
        let response = self.send(self.authed(request))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.status_error(response))
    }

    fn status_error(&self, response: Response) -> BmcError {
        match response.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => BmcError::Auth(format!(
                "{} answered {} for user {}",
                self.base,
                response.status(),
                self.target.username.as_deref().unwrap_or("(none)")
            )),
            _ => refusal(response),
        }
    }

    /// The system's path: the record's `system-id`, else the BMC's only system.
    fn system(&self) -> Result<String, BmcError> {
        let systems = self.get("/redfish/v1/Systems")?;
        let members: Vec<String> = systems["Members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["@odata.id"].as_str())
            .map(|s| s.trim_end_matches('/').to_owned())
            .collect();
        match &self.target.system_id {
            Some(id) => members
                .iter()
                .find(|m| m.rsplit('/').next() == Some(id.as_str()))
                .cloned()
                .ok_or_else(|| {
                    BmcError::Refused(format!(
                        "{} has no system {id:?} (it has {})",
                        self.base,
                        names(&members)
                    ))
                }),
            None => match members.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(BmcError::Refused(format!("{} lists no systems", self.base))),
                _ => Err(BmcError::Refused(format!(
                    "{} has {} systems ({}): set ipmi.system-id (--ipmisystemid) for {}",
                    self.base,
                    members.len(),
                    names(&members),
                    self.target.node
                ))),
            },
        }
    }
}

fn names(members: &[String]) -> String {
    let mut shown: Vec<&str> = members
        .iter()
        .take(5)
        .filter_map(|m| m.rsplit('/').next())
        .collect();
    if members.len() > shown.len() {
        shown.push("...");
    }
    shown.join(", ")
}

fn json_of(session: &Session<'_>, response: Response) -> Result<Value, BmcError> {
    if !response.status().is_success() {
        return Err(session.status_error(response));
    }
    response
        .json()
        .map_err(|e| BmcError::Refused(format!("{}: not Redfish JSON: {e}", session.base)))
}

/// A refused request, in the BMC's words when it gives them (Redfish's error object).
fn refusal(response: Response) -> BmcError {
    let status = response.status();
    let body: Value = response.json().unwrap_or(Value::Null);
    let error = &body["error"];
    let message = error["@Message.ExtendedInfo"][0]["Message"]
        .as_str()
        .or_else(|| error["message"].as_str())
        .unwrap_or("");
    BmcError::Refused(format!("{status} {message}").trim().to_owned())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `ResetType` for an action, from those the system allows.
fn reset_type(action: PowerAction, allowed: &[&str]) -> Result<&'static str, BmcError> {
    let choices: &[&'static str] = match action {
        PowerAction::On => &["On"],
        PowerAction::Off => &["ForceOff"],
        PowerAction::Cycle => &["PowerCycle", "ForceRestart"],
        PowerAction::Reset => &["ForceRestart"],
        PowerAction::Soft => &["GracefulShutdown"],
        PowerAction::Status => return Err(BmcError::Unsupported("status is not a reset".into())),
    };
    // A system that lists nothing allows the standard values.
    choices
        .iter()
        .find(|c| allowed.is_empty() || allowed.contains(c))
        .copied()
        .ok_or_else(|| {
            BmcError::Unsupported(format!(
                "power {} (the BMC allows {})",
                action.name(),
                allowed.join(", ")
            ))
        })
}

impl Redfish {
    fn with_session<T>(
        &self,
        target: &BmcTarget,
        timeout: Duration,
        work: impl FnOnce(&Session<'_>) -> Result<T, BmcError>,
    ) -> Result<T, BmcError> {
        let mut session = self.connect(target, timeout);
        session.login()?;
        let result = work(&session);
        session.logout();
        result
    }
}

impl Bmc for Redfish {
    fn power(
        &self,
        target: &BmcTarget,
        action: PowerAction,
        timeout: Duration,
    ) -> Result<BmcReply, BmcError> {
        self.with_session(target, timeout, |session| {
            let path = session.system()?;
            let system = session.get(&path)?;
            let state = match system["PowerState"].as_str() {
                Some("On" | "PoweringOff") => Some(PowerState::On),
                Some("Off" | "PoweringOn") => Some(PowerState::Off),
                _ => None,
            };
            if action == PowerAction::Status {
                let reported = system["PowerState"].as_str().unwrap_or("unknown");
                return Ok(BmcReply {
                    state: Some(state.ok_or_else(|| {
                        BmcError::Refused(format!("unexpected PowerState {reported:?}"))
                    })?),
                    message: format!("PowerState {reported}"),
                });
            }
            let reset = &system["Actions"]["#ComputerSystem.Reset"];
            let allowed: Vec<&str> = reset["ResetType@Redfish.AllowableValues"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let kind = reset_type(action, &allowed)?;
            let target_path = reset["target"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
            session.write(
                session
                    .client
                    .post(session.url(&target_path))
                    .json(&json!({ "ResetType": kind })),
            )?;
            Ok(BmcReply {
                state: None,
                message: format!("ComputerSystem.Reset {kind}"),
            })
        })
    }

    fn next_boot_pxe(&self, target: &BmcTarget, timeout: Duration) -> Result<BmcReply, BmcError> {
        self.with_session(target, timeout, |session| {
            let path = session.system()?;
            session.write(session.client.patch(session.url(&path)).json(&json!({
                "Boot": {
                    "BootSourceOverrideTarget": "Pxe",
                    "BootSourceOverrideEnabled": "Once",
                }
            })))?;
            Ok(BmcReply {
                state: None,
                message: "BootSourceOverrideTarget Pxe, once".into(),
            })
        })
    }

    /// The system's serial console over SSH, where the BMC offers it. A BMC that offers IPMI
    /// Serial over LAN is reached through `ipmitool` ([`crate::Drivers`] does that).
    fn console(&self, target: &BmcTarget, timeout: Duration) -> Result<ConsoleCommand, BmcError> {
        match self.serial_access(target, timeout)? {
            SerialAccess::Ssh { port } => Ok(ssh_console(target, port)),
            SerialAccess::Ipmi { port } => Err(BmcError::Unsupported(format!(
                "{}'s BMC offers its serial console over IPMI (port {port}), which ipmitool reaches",
                target.node
            ))),
        }
    }
}

/// How a BMC offers a system's serial console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialAccess {
    /// IPMI Serial over LAN, on this UDP port.
    Ipmi { port: u16 },
    /// An SSH service that is the console, on this TCP port.
    Ssh { port: u16 },
}

impl Redfish {
    /// Where the BMC offers the node's serial console: the system's own `SerialConsole`
    /// (ComputerSystem 1.13 and later, per protocol with its port), else its manager's
    /// (`ConnectTypesSupported`, ports from the manager's `NetworkProtocol`).
    pub fn serial_access(
        &self,
        target: &BmcTarget,
        timeout: Duration,
    ) -> Result<SerialAccess, BmcError> {
        self.with_session(target, timeout, |session| {
            let path = session.system()?;
            let system = session.get(&path)?;
            if let Some(access) =
                serial_access(&system["SerialConsole"], &Value::Null, &Value::Null)
            {
                return Ok(access);
            }
            let manager = match system["Links"]["ManagedBy"][0]["@odata.id"].as_str() {
                Some(path) => session.get(path)?,
                None => Value::Null,
            };
            let protocols = match manager["NetworkProtocol"]["@odata.id"].as_str() {
                Some(path) => session.get(path).unwrap_or(Value::Null),
                None => Value::Null,
            };
            serial_access(&Value::Null, &manager["SerialConsole"], &protocols).ok_or_else(|| {
                BmcError::Unsupported(format!(
                    "{}'s BMC offers no serial console (neither the system nor its manager \
                     lists an enabled SerialConsole)",
                    target.node
                ))
            })
        })
    }
}

/// IPMI first (it can be logged without a terminal), then SSH.
fn serial_access(system: &Value, manager: &Value, protocols: &Value) -> Option<SerialAccess> {
    let enabled = |service: &Value| service["ServiceEnabled"].as_bool() == Some(true);
    let port = |service: &Value, default: u16| {
        service["Port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(default)
    };
    if enabled(&system["IPMI"]) {
        return Some(SerialAccess::Ipmi {
            port: port(&system["IPMI"], 623),
        });
    }
    if enabled(&system["SSH"]) {
        return Some(SerialAccess::Ssh {
            port: port(&system["SSH"], 22),
        });
    }
    if !enabled(manager) {
        return None;
    }
    let offers = |kind: &str| {
        manager["ConnectTypesSupported"]
            .as_array()
            .is_some_and(|types| types.iter().any(|t| t == kind))
    };
    if offers("IPMI") {
        return Some(SerialAccess::Ipmi {
            port: port(&protocols["IPMI"], 623),
        });
    }
    offers("SSH").then(|| SerialAccess::Ssh {
        port: port(&protocols["SSH"], 22),
    })
}

/// `ssh` to the BMC's console service; it asks for the password itself, on the terminal.
pub(crate) fn ssh_console(target: &BmcTarget, port: u16) -> ConsoleCommand {
    let mut args = vec!["-p".to_owned(), port.to_string()];
    if let Some(user) = &target.username {
        args.extend(["-l".to_owned(), user.clone()]);
    }
    args.push(target.address.to_string());
    ConsoleCommand {
        program: "ssh".into(),
        args,
        env: Vec::new(),
        escape: "~.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_consoles_are_found_where_the_bmc_offers_them() {
        let none = Value::Null;
        let system = json!({"IPMI": {"ServiceEnabled": true, "Port": 6230},
                            "SSH": {"ServiceEnabled": true, "Port": 2200}});
        assert_eq!(
            serial_access(&system, &none, &none),
            Some(SerialAccess::Ipmi { port: 6230 })
        );
        let system = json!({"IPMI": {"ServiceEnabled": false}, "SSH": {"ServiceEnabled": true}});
        assert_eq!(
            serial_access(&system, &none, &none),
            Some(SerialAccess::Ssh { port: 22 })
        );
        let manager = json!({"ServiceEnabled": true, "ConnectTypesSupported": ["SSH", "Telnet"]});
        let protocols = json!({"SSH": {"Port": 2222, "ProtocolEnabled": true}});
        assert_eq!(
            serial_access(&none, &manager, &protocols),
            Some(SerialAccess::Ssh { port: 2222 })
        );
        let manager = json!({"ServiceEnabled": false, "ConnectTypesSupported": ["IPMI"]});
        assert_eq!(serial_access(&none, &manager, &protocols), None);
        assert_eq!(serial_access(&none, &none, &none), None);
    }

    #[test]
    fn reset_types_follow_what_the_system_allows() {
        assert_eq!(reset_type(PowerAction::On, &[]).ok(), Some("On"));
        assert_eq!(
            reset_type(PowerAction::Cycle, &["On", "ForceOff", "ForceRestart"]).ok(),
            Some("ForceRestart")
        );
        assert_eq!(
            reset_type(PowerAction::Cycle, &["PowerCycle", "ForceRestart"]).ok(),
            Some("PowerCycle")
        );
        assert!(matches!(
            reset_type(PowerAction::Soft, &["On", "ForceOff"]),
            Err(BmcError::Unsupported(m)) if m.contains("On, ForceOff")
        ));
    }
}
