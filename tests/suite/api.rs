//! The REST API and the dashboard, through a real `wulf serve`: every resource with its scope,
//! refused tokens, concurrent edits, the event stream, TLS, the OpenAPI document checked by a
//! maintained validator, and the dashboard in headless Chromium.

use std::io::BufRead as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use wulf_tests::{Serving, Wulf, require_command, test_cache, wait_for, workspace};

use crate::serve_files::curl;

const MAC1: &str = "52:54:00:00:a0:01";
const MAC2: &str = "52:54:00:00:a0:02";
const MAC3: &str = "52:54:00:00:a0:03";

/// A site with three nodes (n003 asks for an asset key) and a running server.
fn site() -> (Wulf, Serving) {
    let wulf = Wulf::new();
    for (node, mac, ip) in [
        ("n001", MAC1, "10.0.0.1"),
        ("n002", MAC2, "10.0.0.2"),
        ("n003", MAC3, "10.0.0.3"),
    ] {
        wulf.ok(&["node", "add", node, "--hwaddr", mac, "--ipaddr", ip]);
    }
    wulf.ok(&["node", "set", "n003", "--asset", "s3cret"]);
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    (wulf, served)
}

fn token(wulf: &Wulf, scopes: &str) -> String {
    wulf.ok(&["token", "create", "--name", "test", "--scope", scopes])
        .trim()
        .to_owned()
}

/// An API call: status, response headers (lowercase) and the JSON body (`Null` when none).
fn call(
    served: &Serving,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[&str],
) -> (u32, String, Value) {
    let url = format!("{}{path}", api_url(served));
    let mut args = vec!["-X".to_owned(), method.to_owned(), url];
    if let Some(token) = token {
        args.extend(["-H".into(), format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = body {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data-binary".into(),
            body.to_string(),
        ]);
    }
    for header in headers {
        args.extend(["-H".into(), (*header).to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, headers, body) = curl(&args);
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (code, headers, value)
}

fn api_url(served: &Serving) -> &str {
    served.api.as_deref().expect("the API runs")
}

fn etag_of(headers: &str) -> String {
    headers
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no ETag in {headers}"))
}

#[test]
fn nodes_and_profiles_are_listed_shown_created_changed_and_deleted_with_the_clis_rules() {
    let (wulf, served) = site();
    let write = token(&wulf, "read,write");

    let (code, _, nodes) = call(&served, "GET", "/api/v1/nodes", Some(&write), None, &[]);
    assert_eq!(code, 200, "{nodes}");
    let ids: Vec<_> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["n001", "n002", "n003"]);
    assert_eq!(nodes["nodes"][0]["hwaddr"], MAC1);
    assert_eq!(nodes["nodes"][0]["profiles"], json!(["default"]));

    // Created as `node add` does: addresses count up, the default profile applies.
    let new =
        json!({"names": ["n[010-011]"], "fields": {"ipaddr": "10.0.1.10", "comment": "rack 2"}});
    let (code, _, created) = call(
        &served,
        "POST",
        "/api/v1/nodes",
        Some(&write),
        Some(&new),
        &[],
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["created"], json!(["n010", "n011"]));
    let (code, headers, shown) = call(
        &served,
        "GET",
        "/api/v1/nodes/n011",
        Some(&write),
        None,
        &[],
    );
    assert_eq!(code, 200, "{shown}");
    assert_eq!(
        shown["stored"]["network-devices"]["default"]["ipaddr"],
        "10.0.1.11"
    );
    assert!(
        shown["merged"]["system-overlays"]
            .as_array()
            .is_some_and(|o| !o.is_empty())
    );
    assert_eq!(shown["profiles_applied"], json!(["default"]));
    assert_eq!(etag_of(&headers), shown["etag"].as_str().unwrap());
    assert!(
        wulf.ok(&["node", "list", "n011", "--json"])
            .contains("10.0.1.11")
    );

    // Changed: the CLI sees it, and the version moves.
    let (code, headers, _) = call(
        &served,
        "PATCH",
        "/api/v1/nodes/n011",
        Some(&write),
        Some(&json!({"comment": "moved", "kernelargs": ["console=ttyS0,115200", "quiet"]})),
        &[],
    );
    assert_eq!(code, 200);
    assert_ne!(etag_of(&headers), shown["etag"].as_str().unwrap());
    let cli: Value = serde_json::from_str(&wulf.ok(&["node", "show", "n011", "--json"])).unwrap();
    assert_eq!(cli["comment"], "moved", "{cli}");
    assert_eq!(
        cli["kernel"]["args"],
        json!(["console=ttyS0,115200", "quiet"]),
        "{cli}"
    );

    // Deleted.
    let (code, _, _) = call(
        &served,
        "DELETE",
        "/api/v1/nodes/n010",
        Some(&write),
        None,
        &[],
    );
    assert_eq!(code, 204);
    let (code, _, gone) = call(
        &served,
        "GET",
        "/api/v1/nodes/n010",
        Some(&write),
        None,
        &[],
    );
    assert_eq!(code, 404, "{gone}");
    assert!(
        gone["error"]
            .as_str()
            .unwrap()
            .contains("node `n010` does not exist"),
        "{gone}"
    );

    // Profiles, and the rule that a profile in use stays.
    let gpu = json!({"names": ["gpu"], "fields": {"kernelargs": ["nouveau.modeset=0"]}});
    let (code, _, _) = call(
        &served,
        "POST",
        "/api/v1/profiles",
        Some(&write),
        Some(&gpu),
        &[],
    );
    assert_eq!(code, 201);
    let (code, _, _) = call(
        &served,
        "PATCH",
        "/api/v1/nodes/n001",
        Some(&write),
        Some(&json!({"profiles": ["default", "gpu"]})),
        &[],
    );
    assert_eq!(code, 200);
    let (_, _, n001) = call(
        &served,
        "GET",
        "/api/v1/nodes/n001",
        Some(&write),
        None,
        &[],
    );
    assert_eq!(
        n001["profiles_applied"],
        json!(["default", "gpu"]),
        "{n001}"
    );
    assert_eq!(
        n001["merged"]["kernel"]["args"],
        json!(["nouveau.modeset=0"]),
        "{n001}"
    );
    let (code, _, profiles) = call(&served, "GET", "/api/v1/profiles", Some(&write), None, &[]);
    assert_eq!(code, 200);
    assert!(profiles["profiles"]["gpu"].is_object(), "{profiles}");
    let (code, _, in_use) = call(
        &served,
        "DELETE",
        "/api/v1/profiles/gpu",
        Some(&write),
        None,
        &[],
    );
    assert_eq!(code, 409, "{in_use}");
    assert!(
        in_use["error"].as_str().unwrap().contains("n001"),
        "{in_use}"
    );

    // Bad input: one clear JSON error naming the field, nothing written.
    let before = std::fs::read_to_string(wulf.path().join("nodes.toml")).unwrap();
    for (method, path, body, status, field, says) in [
        (
            "POST",
            "/api/v1/nodes",
            json!({"names": ["n020"], "fields": {"ipaddr": "10.0.0.300"}}),
            400,
            Some("ipaddr"),
            "not an IPv4 address",
        ),
        (
            "POST",
            "/api/v1/nodes",
            json!({"names": ["n020"], "fields": {"hwaddr": "zz:00"}}),
            400,
            Some("hwaddr"),
            "zz:00",
        ),
        (
            "POST",
            "/api/v1/nodes",
            json!({"names": ["n020"], "colour": "red"}),
            400,
            Some("colour"),
            "unknown field `colour`",
        ),
        (
            "POST",
            "/api/v1/nodes",
            json!({"names": []}),
            400,
            Some("names"),
            "name the nodes",
        ),
        (
            "POST",
            "/api/v1/nodes",
            json!({"names": ["n001"]}),
            409,
            None,
            "already exists",
        ),
        (
            "POST",
            "/api/v1/nodes",
            json!({"names": ["n[5-1]"]}),
            400,
            None,
            "n[5-1]",
        ),
        (
            "PATCH",
            "/api/v1/nodes/n001",
            json!({"hwaddr": MAC2}),
            400,
            Some("network-devices.default.hwaddr"),
            MAC2,
        ),
        (
            "PATCH",
            "/api/v1/nodes/n001",
            json!({"mtu": "huge"}),
            400,
            Some("mtu"),
            "huge",
        ),
        (
            "PATCH",
            "/api/v1/nodes/nope",
            json!({"comment": "x"}),
            404,
            None,
            "node `nope` does not exist",
        ),
        (
            "PATCH",
            "/api/v1/profiles/default",
            json!({"ipmiaddr": "10.0.0"}),
            400,
            Some("ipmiaddr"),
            "10.0.0",
        ),
        (
            "POST",
            "/api/v1/overlays/build",
            json!({"nodes": ["nope"]}),
            404,
            None,
            "nope",
        ),
    ] {
        let (code, _, error) = call(&served, method, path, Some(&write), Some(&body), &[]);
        assert_eq!(code, status, "{method} {path} {body}: {error}");
        assert_eq!(
            error["field"].as_str(),
            field,
            "{method} {path} {body}: {error}"
        );
        assert!(
            error["error"].as_str().unwrap_or_default().contains(says),
            "{method} {path} {body}: {error}"
        );
    }
    let (code, _, error) = call_raw(&served, "POST", "/api/v1/nodes", &write, "{not json");
    assert_eq!(code, 400, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("the request body"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(wulf.path().join("nodes.toml")).unwrap(),
        before
    );

    // Every change is in the audit log, with who made it.
    let audit = std::fs::read_to_string(wulf.path().join("api/audit.log")).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let done: Vec<_> = lines
        .iter()
        .filter(|l| l["outcome"] == "ok")
        .map(|l| {
            format!(
                "{} {}",
                l["action"].as_str().unwrap(),
                l["subject"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "node.create n[010-011]",
        "node.update n011",
        "node.delete n010",
        "profile.create gpu",
        "node.update n001",
    ] {
        assert!(
            done.contains(&expected.to_owned()),
            "{expected} not in {done:?}"
        );
    }
    let by_api = lines.iter().filter(|l| l["action"] != "token.create");
    assert!(
        by_api.clone().count() >= 5
            && by_api
                .into_iter()
                .all(|l| l["who"].as_str().unwrap().starts_with("token ")),
        "{audit}"
    );
    assert!(
        lines.iter().any(|l| l["action"] == "profile.delete"
            && l["outcome"].as_str().unwrap().starts_with("refused")),
        "{audit}"
    );
}

fn call_raw(
    served: &Serving,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u32, String, Value) {
    let url = format!("{}{path}", api_url(served));
    let auth = format!("Authorization: Bearer {token}");
    let (code, headers, body) = curl(&["-X", method, &url, "-H", &auth, "--data-binary", body]);
    (
        code,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[test]
fn missing_expired_revoked_and_underscoped_tokens_are_refused() {
    let (wulf, served) = site();
    let read = token(&wulf, "read");
    let expired = wulf.ok(&["token", "create", "--scope", "admin", "--expires", "0m"]);
    let revoked = token(&wulf, "admin");
    let listed: Value = serde_json::from_str(&wulf.ok(&["token", "list", "--json"])).unwrap();
    let revoked_id = revoked.split('_').nth(1).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == revoked_id),
        "{listed}"
    );
    assert!(
        !wulf
            .ok(&["token", "list", "--json"])
            .contains(revoked.rsplit('_').next().unwrap())
    );
    wulf.ok(&["token", "revoke", revoked_id]);

    for (presented, what) in [
        (None, "no token"),
        (Some("not-a-token"), "malformed"),
        (Some(expired.trim()), "expired"),
        (Some(revoked.as_str()), "revoked"),
        (Some(&read[..read.len() - 1]), "a wrong secret"),
    ] {
        let (code, headers, error) = call(&served, "GET", "/api/v1/nodes", presented, None, &[]);
        assert_eq!(code, 401, "{what}: {error}");
        assert!(
            headers.contains("www-authenticate: bearer"),
            "{what}: {headers}"
        );
        assert!(error["error"].is_string(), "{what}: {error}");
    }
    for (method, path, body) in [
        ("PATCH", "/api/v1/nodes/n001", Some(json!({"comment": "x"}))),
        ("DELETE", "/api/v1/nodes/n001", None),
        (
            "POST",
            "/api/v1/power",
            Some(json!({"nodes": ["n001"], "action": "status"})),
        ),
        ("GET", "/api/v1/nodes/n001/console", None),
        ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/overlays/build", Some(json!({}))),
    ] {
        let (code, _, error) = call(&served, method, path, Some(&read), body.as_ref(), &[]);
        assert_eq!(code, 403, "{method} {path}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains("lacks the"),
            "{error}"
        );
    }
    // An admin token does everything, tokens included; what it makes is shown once.
    let admin = token(&wulf, "admin");
    let (code, _, made) = call(
        &served,
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(&json!({"name": "ci", "scopes": ["power"], "expires": "1h"})),
        &[],
    );
    assert_eq!(code, 201, "{made}");
    let power = made["token"].as_str().unwrap().to_owned();
    let (code, _, _) = call(&served, "GET", "/api/v1/nodes", Some(&power), None, &[]);
    assert_eq!(code, 403, "power alone does not read");
    let (code, _, listed) = call(&served, "GET", "/api/v1/tokens", Some(&admin), None, &[]);
    assert_eq!(code, 200);
    assert!(
        !listed
            .to_string()
            .contains(power.rsplit('_').next().unwrap()),
        "{listed}"
    );
    let (code, _, bad) = call(
        &served,
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(&json!({"name": "x", "scopes": ["root"]})),
        &[],
    );
    assert_eq!((code, bad["field"].as_str()), (400, Some("scope")), "{bad}");
    let id = made["info"]["id"].as_str().unwrap();
    let (code, _, _) = call(
        &served,
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 204);
    let (code, _, _) = call(
        &served,
        "POST",
        "/api/v1/power",
        Some(&power),
        Some(&json!({"nodes": ["n001"], "action": "status"})),
        &[],
    );
    assert_eq!(code, 401, "revoked through the API");
    let stored = std::fs::read_to_string(wulf.path().join("api/tokens.json")).unwrap();
    assert!(
        !stored.contains(admin.rsplit('_').next().unwrap()),
        "secrets are stored hashed"
    );
}

#[test]
fn concurrent_edits_with_if_match_lose_no_update() {
    let (wulf, served) = site();
    let write = token(&wulf, "read,write");
    let (_, headers, _) = call(
        &served,
        "GET",
        "/api/v1/nodes/n002",
        Some(&write),
        None,
        &[],
    );
    let first = etag_of(&headers);
    // A stale version is refused with the current one named; nothing changes.
    call(
        &served,
        "PATCH",
        "/api/v1/nodes/n002",
        Some(&write),
        Some(&json!({"comment": "a"})),
        &[],
    );
    let stale = format!("If-Match: \"{first}\"");
    let (code, _, error) = call(
        &served,
        "PATCH",
        "/api/v1/nodes/n002",
        Some(&write),
        Some(&json!({"comment": "b"})),
        &[&stale],
    );
    assert_eq!(code, 412, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("changed by someone else"),
        "{error}"
    );
    let (code, _, _) = call(
        &served,
        "DELETE",
        "/api/v1/nodes/n002",
        Some(&write),
        None,
        &[&stale],
    );
    assert_eq!(code, 412);

    // Eight writers each append a letter to the comment by read, change, write-if-unchanged,
    // retrying on 412: every letter must be there at the end.
    call(
        &served,
        "PATCH",
        "/api/v1/nodes/n002",
        Some(&write),
        Some(&json!({"comment": ""})),
        &[],
    );
    let letters = "abcdefgh";
    let conflicts = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for letter in letters.chars() {
            let (served, write, conflicts) = (&served, &write, &conflicts);
            scope.spawn(move || {
                for _ in 0..100 {
                    let (_, headers, node) =
                        call(served, "GET", "/api/v1/nodes/n002", Some(write), None, &[]);
                    let comment = node["stored"]["comment"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let guard = format!("If-Match: \"{}\"", etag_of(&headers));
                    let body = json!({"comment": format!("{comment}{letter}")});
                    match call(
                        served,
                        "PATCH",
                        "/api/v1/nodes/n002",
                        Some(write),
                        Some(&body),
                        &[&guard],
                    )
                    .0
                    {
                        200 => return,
                        412 => {
                            conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        other => panic!("PATCH answered {other}"),
                    }
                }
                panic!("{letter} never got its edit in");
            });
        }
    });
    let (_, _, node) = call(
        &served,
        "GET",
        "/api/v1/nodes/n002",
        Some(&write),
        None,
        &[],
    );
    let mut comment: Vec<char> = node["stored"]["comment"]
        .as_str()
        .unwrap()
        .chars()
        .collect();
    comment.sort_unstable();
    assert_eq!(comment.into_iter().collect::<String>(), letters, "{node}");
    eprintln!(
        "{} conflicting edits were refused and retried",
        conflicts.load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[test]
fn images_import_and_build_as_jobs_and_overlays_and_plugins_are_listed() {
    let (wulf, served) = site();
    let write = token(&wulf, "read,write");
    let scratch = tempfile::tempdir().unwrap();
    // Through the API images come from registries.
    let layout = crate::cli_image::fixture_layout(&scratch.path().join("layout"));
    let registry = wulf_tests::oci::Registry::start();
    registry.push(&layout, "v1", "test/img:v1");
    let source = format!("docker://{}/test/img:v1", registry.addr);
    let import = json!({"source": source, "name": "base", "insecure_http": true});
    let (code, _, job) = call(
        &served,
        "POST",
        "/api/v1/images",
        Some(&write),
        Some(&import),
        &[],
    );
    assert_eq!(code, 202, "{job}");
    let job = finished(&served, &write, &job);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["name"], "base", "{job}");
    let (code, _, image) = call(
        &served,
        "GET",
        "/api/v1/images/base",
        Some(&write),
        None,
        &[],
    );
    assert_eq!(code, 200, "{image}");
    assert_eq!(image["image"]["source"], source.as_str(), "{image}");
    assert!(
        image["image"]["build"]["size"].as_u64().unwrap() > 0,
        "{image}"
    );
    let (code, _, job) = call(
        &served,
        "POST",
        "/api/v1/images/base/build",
        Some(&write),
        None,
        &[],
    );
    assert_eq!(code, 202, "{job}");
    assert_eq!(finished(&served, &write, &job)["state"], "succeeded");
    let (_, _, images) = call(&served, "GET", "/api/v1/images", Some(&write), None, &[]);
    assert_eq!(images["images"][0]["image"]["name"], "base", "{images}");

    // An import that fails is a failed job with the reason; bad requests are refused at once.
    let (_, _, job) = call(
        &served,
        "POST",
        "/api/v1/images",
        Some(&write),
        Some(
            &json!({"source": format!("docker://{}/no/such:v1", registry.addr), "name": "x", "insecure_http": true}),
        ),
        &[],
    );
    let job = finished(&served, &write, &job);
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("no/such"), "{job}");
    let (code, _, error) = call(
        &served,
        "POST",
        "/api/v1/images",
        Some(&write),
        Some(&json!({"source": "/etc"})),
        &[],
    );
    assert_eq!(
        (code, error["field"].as_str()),
        (400, Some("source")),
        "{error}"
    );
    assert!(
        error["error"].as_str().unwrap().contains("registries only"),
        "{error}"
    );
    let (code, _, error) = call(
        &served,
        "POST",
        "/api/v1/images",
        Some(&write),
        Some(&json!({"source": "docker://"})),
        &[],
    );
    assert_eq!(
        (code, error["field"].as_str()),
        (400, Some("source")),
        "{error}"
    );
    let (code, _, _) = call(
        &served,
        "POST",
        "/api/v1/images/nope/build",
        Some(&write),
        None,
        &[],
    );
    assert_eq!(code, 404);
    let (code, _, _) = call(&served, "GET", "/api/v1/jobs/999", Some(&write), None, &[]);
    assert_eq!(code, 404);

    // Overlays build through the API as through the CLI.
    wulf.ok(&["node", "set", "n[001-003]", "--image", "base"]);
    let (code, _, built) = call(
        &served,
        "POST",
        "/api/v1/overlays/build",
        Some(&write),
        Some(&json!({"nodes": ["n001"]})),
        &[],
    );
    assert_eq!(code, 200, "{built}");
    assert_eq!(built["built"], json!(["n001"]), "{built}");
    let (_, _, overlays) = call(&served, "GET", "/api/v1/overlays", Some(&write), None, &[]);
    let hostname = overlays["overlays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "hostname")
        .unwrap();
    assert_eq!(hostname["nodes"], 3, "{overlays}");
    let (_, _, plugins) = call(&served, "GET", "/api/v1/plugins", Some(&write), None, &[]);
    let hostname = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hostname")
        .unwrap();
    assert_eq!(
        (hostname["enabled"].as_bool(), hostname["source"].as_str()),
        (Some(true), Some("embedded")),
        "{plugins}"
    );
}

/// Polls a job until it ends.
fn finished(served: &Serving, token: &str, job: &Value) -> Value {
    let path = format!("/api/v1/jobs/{}", job["id"]);
    wait_for(
        "the job to end",
        Duration::from_secs(60),
        || {
            call(served, "GET", &path, Some(token), None, &[])
                .2
                .to_string()
        },
        || {
            let (_, _, job) = call(served, "GET", &path, Some(token), None, &[]);
            (job["state"] != "running").then_some(job)
        },
    )
}

#[test]
fn power_goes_to_the_nodes_bmc_and_failures_are_per_node() {
    require_command("ipmi_sim", "openipmi");
    require_command("ipmitool", "ipmitool");
    let (wulf, served) = site();
    let scratch = tempfile::tempdir().unwrap();
    let sim = crate::bmc::IpmiSim::start(&scratch.path().join("bmc"), None);
    let port = sim.port.to_string();
    wulf.ok(&[
        "node",
        "set",
        "n001",
        "--ipmiaddr",
        "127.0.0.1",
        "--ipmiport",
        &port,
        "--ipmiuser",
        "admin",
        "--ipmipass",
        "secret",
    ]);
    let power = token(&wulf, "power");
    let (code, _, results) = call(
        &served,
        "POST",
        "/api/v1/power",
        Some(&power),
        Some(&json!({"nodes": ["n[001-002]"], "action": "status"})),
        &[],
    );
    assert_eq!(code, 200, "{results}");
    let results = results["results"].as_array().unwrap();
    assert_eq!(
        (results[0]["node"].as_str(), results[0]["ok"].as_bool()),
        (Some("n001"), Some(true)),
        "{results:?}"
    );
    assert_eq!(results[0]["state"], "off", "{results:?}");
    assert_eq!(results[1]["ok"], false, "{results:?}");
    assert!(
        results[1]["message"]
            .as_str()
            .unwrap()
            .contains("no BMC configured"),
        "{results:?}"
    );
    assert!(!serde_json::to_string(results).unwrap().contains("secret"));
    let (code, _, error) = call(
        &served,
        "POST",
        "/api/v1/power",
        Some(&power),
        Some(&json!({"nodes": ["n001"], "action": "explode"})),
        &[],
    );
    assert_eq!(
        (code, error["field"].as_str()),
        (400, Some("action")),
        "{error}"
    );
    let (code, _, error) = call(
        &served,
        "GET",
        "/api/v1/nodes/n001/console",
        Some(&power),
        None,
        &[],
    );
    assert_eq!(code, 404, "no console log is kept unless asked: {error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("[console] log = true"),
        "{error}"
    );
    // The end of the log `wulf serve` keeps (written here as its console logger writes it).
    let log: String = (0..2000).map(|i| format!("console line {i}\n")).collect();
    std::fs::create_dir_all(wulf.path().join("console")).unwrap();
    std::fs::write(wulf.path().join("console/n001.log"), &log).unwrap();
    let url = format!("{}/api/v1/nodes/n001/console?bytes=100", api_url(&served));
    let auth = format!("Authorization: Bearer {power}");
    let (code, headers, tail) = curl(&[&url, "-H", &auth]);
    assert_eq!(code, 200);
    assert!(headers.contains("content-type: text/plain"), "{headers}");
    assert_eq!(String::from_utf8(tail).unwrap(), log[log.len() - 100..]);
}

#[test]
fn boot_events_stream_as_nodes_fetch_their_files() {
    let (wulf, served) = site();
    let read = token(&wulf, "read");
    let mut stream = Command::new("curl")
        .args(["-sN", "-H", &format!("Authorization: Bearer {read}")])
        .arg(format!("{}/api/v1/events", api_url(&served)))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (sender, events) = std::sync::mpsc::channel();
    let stdout = stream.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(data) = line.strip_prefix("data: ") {
                let _ = sender.send(serde_json::from_str::<Value>(data).unwrap_or(Value::Null));
            }
        }
    });
    // The stream is open once a fetch's event arrives; fetch until one does.
    let boot = format!("http://{}", served.http);
    let first = wait_for(
        "the first event",
        Duration::from_secs(20),
        String::new,
        || {
            curl(&[&format!("{boot}/ipxe/{MAC1}")]);
            events.recv_timeout(Duration::from_millis(200)).ok()
        },
    );
    assert_eq!(
        (
            first["node"].as_str(),
            first["stage"].as_str(),
            first["result"].as_str()
        ),
        (Some("n001"), Some("ipxe"), Some("ok")),
        "{first}"
    );
    assert!(first["bytes"].as_u64().unwrap() > 0, "{first}");
    while events.recv_timeout(Duration::from_millis(300)).is_ok() {}
    curl(&[&format!("{boot}/ipxe/52:54:00:ff:ff:ff")]);
    curl(&[&format!("{boot}/kernel/{MAC3}")]);
    curl(&[&format!("{boot}/kernel/{MAC2}")]);
    let mut heard = Vec::new();
    while let Ok(event) = events.recv_timeout(Duration::from_secs(5)) {
        heard.push(event);
        if heard.len() == 3 {
            break;
        }
    }
    let _ = stream.kill();
    let _ = stream.wait();
    let summary: Vec<_> = heard
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["node"],
                e["stage"].as_str().unwrap(),
                e["result"].as_str().unwrap(),
                e["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(summary.len(), 3, "{summary:?}");
    assert_eq!(summary[0], "null ipxe unknown ", "{summary:?}");
    assert_eq!(
        summary[1], "\"n003\" kernel error asset key mismatch",
        "{summary:?}"
    );
    assert!(
        summary[2].starts_with("\"n002\" kernel error node `n002` has no image"),
        "{summary:?}"
    );
    assert!(
        heard
            .windows(2)
            .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64())
    );

    // /status has each node's trace and last failure.
    let (_, _, status) = call(&served, "GET", "/api/v1/status", Some(&read), None, &[]);
    assert_eq!(
        status["nodes"]["n001"]["trace"][0]["stage"], "ipxe",
        "{status}"
    );
    assert_eq!(
        status["nodes"]["n003"]["error"]["reason"], "asset key mismatch",
        "{status}"
    );
    assert!(
        status["nodes"].get("52:54:00:ff:ff:ff").is_none(),
        "{status}"
    );
}

/// `openapi-spec-validator` (PyPI) in a venv in the test cache.
fn openapi_validator() -> PathBuf {
    let venv = test_cache().join("openapi-spec-validator-0.7.2");
    let bin = venv.join("bin/openapi-spec-validator");
    if !bin.exists() {
        require_command("python3", "python3");
        let _ = std::fs::remove_dir_all(&venv);
        wulf_tests::oci::run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        wulf_tests::oci::run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "openapi-spec-validator==0.7.2",
        ]));
    }
    bin
}

#[test]
fn the_openapi_document_validates_and_names_exactly_the_routes_served() {
    let (wulf, served) = site();
    let admin = token(&wulf, "admin");
    let (code, _, doc) = call(&served, "GET", "/api/v1/openapi.json", None, None, &[]);
    assert_eq!(code, 200);
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let checked = Command::new(openapi_validator())
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // Every documented operation is served (a request reaches its handler: no 404 "no such
    // endpoint", no 405), and a path the document lacks is not.
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if !["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let concrete = path.replace("{id}", "n001").replace("{name}", "nope");
            let concrete = if concrete.starts_with("/api/v1/jobs/")
                || concrete.starts_with("/api/v1/tokens/")
            {
                concrete.replace("n001", "1")
            } else {
                concrete
            };
            if method == "get" && concrete.ends_with("/events") {
                continue; // a stream: checked by its own test
            }
            let body = json!({});
            let (code, _, answer) = call(
                &served,
                &method.to_uppercase(),
                &concrete,
                Some(&admin),
                Some(&body),
                &[],
            );
            assert_ne!(code, 405, "{method} {concrete}: {answer}");
            assert!(
                !answer["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("no such endpoint"),
                "{method} {concrete} is documented but not served: {answer}"
            );
        }
    }
    assert!(operations >= 20, "{operations} operations");
    let (code, _, answer) = call(&served, "GET", "/api/v1/hosts", Some(&admin), None, &[]);
    assert_eq!(code, 404);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no such endpoint"),
        "{answer}"
    );
}

#[test]
fn bound_with_tls_the_api_speaks_it_with_its_certificate() {
    let wulf = Wulf::new();
    wulf.write("wulf.toml", "[api]\ntls = \"on\"\n");
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let url = api_url(&served).to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let read = token(&wulf, "read");
    let auth = format!("Authorization: Bearer {read}");
    let cert = wulf.path().join("api/tls.crt");
    let (code, _, body) = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        "-H",
        &auth,
        &format!("{url}/api/v1/nodes"),
    ]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let key = wulf.path().join("api/tls.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Unverified, curl refuses (exit 60); plain HTTP gets no answer.
    let refused = Command::new("curl")
        .args(["-s", "-o", "/dev/null", &format!("{url}/api/v1/nodes")])
        .status()
        .unwrap();
    assert_eq!(refused.code(), Some(60));
    let plain = url.replace("https://", "http://");
    let (code, _, _) = curl(&["--max-time", "5", &format!("{plain}/api/v1/nodes")]);
    assert_ne!(code, 200);
    // `wulf dashboard` links to the running server's TLS address.
    let link = wulf.ok(&["dashboard"]);
    assert!(
        link.trim().starts_with(&format!("{url}/#token=wulf_")),
        "{link}"
    );
}

#[test]
fn the_dashboard_shows_a_boot_as_it_happens_in_a_real_browser() {
    let (wulf, served) = site();
    let link = wulf.ok(&["dashboard", "--expires", "1h"]).trim().to_owned();
    assert!(
        link.starts_with(&format!("{}/#token=wulf_", api_url(&served))),
        "{link}"
    );
    let mut browser = wulf_tests::chromium::Browser::launch();

    // Without a token the page says what to do.
    browser.navigate(&format!("{}/", api_url(&served)));
    browser.wait_until(
        "the no-token message",
        "document.body.innerText.includes('No access token')",
    );

    browser.navigate(&link);
    browser.wait_until(
        "the nodes",
        "document.querySelectorAll('#nodes tbody tr[data-node]').length === 3",
    );
    browser.wait_until(
        "a live event stream",
        "document.querySelector('#connection').textContent.trim() === 'live'",
    );
    assert!(
        browser
            .eval("location.hash")
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "the token leaves the address bar"
    );
    browser.wait_until(
        "the plugins",
        "document.querySelector('#plugins').innerText.includes('hostname')",
    );

    // Nodes boot while the page watches: n001 gets its script, n003 is refused its kernel
    // (asset key), n002 has no image, and an unknown MAC knocks.
    let boot = format!("http://{}", served.http);
    curl(&[&format!("{boot}/ipxe/{MAC1}")]);
    curl(&[&format!("{boot}/kernel/{MAC3}")]);
    curl(&[&format!("{boot}/kernel/{MAC2}")]);
    curl(&[&format!("{boot}/ipxe/52:54:00:ff:ff:ff")]);
    browser.wait_until(
        "n001 at its iPXE script",
        "document.querySelector('tr[data-node=\"n001\"] td.stage').textContent.includes('ipxe')",
    );
    browser.wait_until(
        "n003 in red with its reason",
        "document.querySelector('tr[data-node=\"n003\"]').classList.contains('error') && document.querySelector('tr[data-node=\"n003\"]').innerText.includes('asset key mismatch')",
    );
    browser.wait_until(
        "the unknown MAC counted",
        "document.querySelector('#unknown-count').textContent.trim() === '1'",
    );
    browser.wait_until(
        "two errors listed",
        "document.querySelectorAll('#errors li.error').length === 2",
    );
    let red = browser
        .eval("getComputedStyle(document.querySelector('tr[data-node=\"n003\"] td.reason')).color");
    let (r, g, b) = rgb(red.as_str().unwrap_or_default());
    assert!(
        r > 150 && g < 100 && b < 100,
        "errors show in red, not {red}"
    );

    // A node's boot trace.
    browser.eval("document.querySelector('tr[data-node=\"n001\"]').click()");
    browser.wait_until(
        "n001's trace",
        "document.querySelector('#trace').innerText.includes('n001') && document.querySelector('#trace').innerText.includes('ipxe script')",
    );
    let artifact = workspace().join("target/test-artifacts/dashboard.png");
    browser.screenshot(&artifact);
    assert!(
        std::fs::metadata(&artifact).unwrap().len() > 10_000,
        "{}",
        artifact.display()
    );
    eprintln!("dashboard screenshot: {}", artifact.display());
}

/// `rgb(r, g, b)` as CSS computes colours.
fn rgb(css: &str) -> (u32, u32, u32) {
    let numbers: Vec<u32> = css
        .trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    match numbers.as_slice() {
        [r, g, b, ..] => (*r, *g, *b),
        _ => panic!("not an rgb colour: {css}"),
    }
}

#[test]
fn the_cli_works_against_a_remote_server_through_the_api() {
    let (wulf, served) = site();
    let admin = token(&wulf, "admin");
    let url = api_url(&served).to_owned();
    // Another machine's CLI: an empty state directory of its own, never used.
    let client = Wulf::new();
    let remote = |args: &[&str]| -> String {
        let mut full = vec!["--server", url.as_str(), "--token", admin.as_str()];
        full.extend_from_slice(args);
        client.ok(&full)
    };
    assert_eq!(
        remote(&["node", "add", "n[020-021]", "--ipaddr", "10.0.2.20"]).trim(),
        "added 2 node(s): n020 .. n021"
    );
    assert_eq!(
        remote(&["node", "set", "n021", "--comment", "remote"]).trim(),
        "updated 1 node(s)"
    );
    // What the server's own CLI shows, the remote one shows.
    for args in [
        &["node", "list"][..],
        &["node", "list", "--net", "n02[0-1]"],
        &["node", "show", "n021"],
        &["node", "show", "n021", "--json"],
        &["profile", "list"],
        &["overlay", "list"],
    ] {
        assert_eq!(remote(args), wulf.ok(args), "{args:?}");
    }
    assert!(remote(&["node", "delete", "n020", "--yes"]).contains("deleted 1 node(s): n020"));
    assert!(!wulf.ok(&["node", "list"]).contains("n020"));
    let status = remote(&["node", "status"]);
    assert!(
        status.contains("n021") && status.contains("never"),
        "{status}"
    );
    assert!(remote(&["dashboard"]).starts_with(&format!("{url}/#token=wulf_")));
    assert!(
        client.ok(&["node", "list"]).lines().count() <= 1,
        "the client's own state is untouched"
    );

    // Refusals, said clearly: the server's error, a command the API lacks, no token.
    let mut args = vec!["--server", url.as_str(), "--token", admin.as_str()];
    args.extend(["node", "set", "n999", "--comment", "x"]);
    let error = client.fails(&args);
    assert!(
        error.contains("node `n999` does not exist") && error.contains("404"),
        "{error}"
    );
    let error = client.fails(&[
        "--server", &url, "--token", &admin, "image", "exec", "x", "--", "true",
    ]);
    assert!(error.contains("works on the wulf host itself"), "{error}");
    let error = client.fails(&["--server", &url, "node", "list"]);
    assert!(error.contains("--server needs a token"), "{error}");
    let read = token(&wulf, "read");
    let error = client.fails(&[
        "--server", &url, "--token", &read, "node", "delete", "n021", "--yes",
    ]);
    assert!(
        error.contains("lacks the `write` scope") && error.contains("403"),
        "{error}"
    );
}

#[test]
fn the_remote_cli_verifies_the_servers_certificate() {
    let wulf = Wulf::new();
    wulf.write("wulf.toml", "[api]\ntls = \"on\"\n");
    wulf.ok(&["node", "add", "n001"]);
    let served = wulf.serve(&["--http-addr", "127.0.0.1:0", "--no-tftp"]);
    let url = api_url(&served).to_owned();
    let read = token(&wulf, "read");
    let client = Wulf::new();
    let error = client.fails(&["--server", &url, "--token", &read, "node", "list"]);
    assert!(
        error.contains("cannot reach the wulf API") && error.contains("certificate"),
        "{error}"
    );
    let cert = wulf.path().join("api/tls.crt");
    let listed = client.ok(&[
        "--server",
        &url,
        "--token",
        &read,
        "--cacert",
        cert.to_str().unwrap(),
        "node",
        "list",
    ]);
    assert!(listed.contains("n001"), "{listed}");
}

#[test]
fn an_event_stream_ends_when_its_token_is_revoked() {
    let (wulf, served) = site();
    let read = token(&wulf, "read");
    let mut stream = Command::new("curl")
        .args(["-sN", "-H", &format!("Authorization: Bearer {read}")])
        .arg(format!("{}/api/v1/events", api_url(&served)))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(stream.try_wait().unwrap().is_none(), "the stream is open");
    wulf.ok(&["token", "revoke", read.split('_').nth(1).unwrap()]);
    let ended = wait_for(
        "the stream to end",
        Duration::from_secs(30),
        String::new,
        || stream.try_wait().unwrap(),
    );
    assert!(ended.success(), "the server ended the stream: {ended:?}");
}
