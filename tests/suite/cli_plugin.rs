//! `wulf plugin ...` through the real binary, against a scratch state directory.

use wulf_tests::{Wulf, fixture_dir, fixture_wasm, plugin_dir, workspace};

const NODES: &str = r#"
[profiles.default]
image = "rocky-9"
[nodes.n001]
profiles = ["default"]
[nodes.n001.network-devices.default]
hwaddr = "aa:bb:cc:dd:ee:01"
ipaddr = "10.0.0.1"
"#;

#[test]
fn install_list_test_and_remove() {
    let wulf = Wulf::new();
    wulf.write("nodes.toml", NODES);
    insta::assert_snapshot!(wulf.ok(&["plugin", "list"]), @"
    NAME                 VERSION  WORLD              SOURCE    STATUS
    csv-inventory        0.1.0    inventory-backend  embedded  enabled
    customize            0.1.0    image-transform    embedded  enabled
    fstab                0.1.0    overlay-generator  embedded  enabled
    hostname             0.1.0    overlay-generator  embedded  enabled
    hosts                0.1.0    overlay-generator  embedded  enabled
    network              0.1.0    overlay-generator  embedded  enabled
    resolv               0.1.0    overlay-generator  embedded  enabled
    ssh-authorized-keys  0.1.0    overlay-generator  embedded  enabled
    ssh-host-keys        0.1.0    overlay-generator  embedded  enabled
    strip-docs           0.1.0    image-transform    embedded  enabled
    wwinit               0.1.0    overlay-generator  embedded  enabled
    ");
    insta::assert_snapshot!(wulf.ok(&["plugin", "test", "hostname", "--node", "n001"]), @r"
    /etc/hostname 0644 0:0 5 file
        n001
    ");

    // An installed plugin of the same name overrides the embedded one.
    let src = plugin_dir(
        &workspace().join("plugins/hostname"),
        "wulf-plugin-hostname",
    );
    let installed = wulf.ok(&["plugin", "install", &src.path().display().to_string()]);
    assert!(
        installed.starts_with("installed plugin `hostname` 0.1.0 (overlay-generator)"),
        "{installed}"
    );
    let list = wulf.redact(&wulf.ok(&["plugin", "list"]));
    insta::assert_snapshot!(list, @"
    NAME                 VERSION  WORLD              SOURCE                            STATUS
    csv-inventory        0.1.0    inventory-backend  embedded                          enabled
    customize            0.1.0    image-transform    embedded                          enabled
    fstab                0.1.0    overlay-generator  embedded                          enabled
    hostname             0.1.0    overlay-generator  [STATE]/plugins/hostname  enabled (overrides embedded)
    hosts                0.1.0    overlay-generator  embedded                          enabled
    network              0.1.0    overlay-generator  embedded                          enabled
    resolv               0.1.0    overlay-generator  embedded                          enabled
    ssh-authorized-keys  0.1.0    overlay-generator  embedded                          enabled
    ssh-host-keys        0.1.0    overlay-generator  embedded                          enabled
    strip-docs           0.1.0    image-transform    embedded                          enabled
    wwinit               0.1.0    overlay-generator  embedded                          enabled
    ");

    // A bare component, named on the command line, configured by the site.
    wulf.write(
        "wulf.toml",
        "[plugin.echo.config]\nnodes = [{ id = \"x001\", hwaddr = \"02:00:00:00:00:01\" }]\n",
    );
    wulf.ok(&[
        "plugin",
        "install",
        &fixture_wasm("wulf-fixture-echo-backend")
            .display()
            .to_string(),
        "--name",
        "echo",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["plugin", "list", "--json"])).unwrap_or_default();
    let echo = json
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "echo"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (echo["world"].as_str(), echo["version"].as_str()),
        (Some("inventory-backend"), Some("0.0.0"))
    );

    let show: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["plugin", "show", "echo", "--json"])).unwrap_or_default();
    let load = show["load"].as_str().unwrap_or_default();
    assert!(
        load.starts_with("loads: from the compile cache"),
        "install warms the cache: {load}"
    );
    insta::assert_snapshot!(wulf.ok(&["plugin", "test", "echo"]), @"
    NODE  HWADDRS            PROFILES
    x001  02:00:00:00:00:01  --
    ");

    let removed = wulf.redact(&wulf.ok(&["plugin", "remove", "hostname"]));
    insta::assert_snapshot!(removed, @"
    removed plugin `hostname` ([STATE]/plugins/hostname)
    the embedded `hostname` is in use again
    ");
    wulf.ok(&["plugin", "remove", "echo"]);
    insta::assert_snapshot!(wulf.ok(&["plugin", "list"]), @"
    NAME                 VERSION  WORLD              SOURCE    STATUS
    csv-inventory        0.1.0    inventory-backend  embedded  enabled
    customize            0.1.0    image-transform    embedded  enabled
    fstab                0.1.0    overlay-generator  embedded  enabled
    hostname             0.1.0    overlay-generator  embedded  enabled
    hosts                0.1.0    overlay-generator  embedded  enabled
    network              0.1.0    overlay-generator  embedded  enabled
    resolv               0.1.0    overlay-generator  embedded  enabled
    ssh-authorized-keys  0.1.0    overlay-generator  embedded  enabled
    ssh-host-keys        0.1.0    overlay-generator  embedded  enabled
    strip-docs           0.1.0    image-transform    embedded  enabled
    wwinit               0.1.0    overlay-generator  embedded  enabled
    ");
}

#[test]
fn disable_and_enable() {
    let wulf = Wulf::new();
    wulf.write("nodes.toml", NODES);
    insta::assert_snapshot!(wulf.ok(&["plugin", "disable", "hostname"]), @"disabled plugin `hostname`");
    insta::assert_snapshot!(wulf.fails(&["plugin", "test", "hostname", "--node", "n001"]), @"error: plugin `hostname` is disabled (enable it with `wulf plugin enable hostname`)");
    wulf.ok(&["plugin", "enable", "hostname"]);
    wulf.ok(&["plugin", "test", "hostname", "--node", "n001"]);
}

#[test]
fn bad_installs_change_nothing() {
    let wulf = Wulf::new();
    let old = plugin_dir(&fixture_dir("old-api"), "wulf-fixture-old-api");
    let error = wulf.fails(&["plugin", "install", &old.path().display().to_string()]);
    insta::assert_snapshot!(error.replace(&old.path().display().to_string(), "[SRC]"), @"error: [SRC]: it was built against wulf:plugin@0.2.0, but this host implements wulf:plugin@0.1.0; rebuild it with wulf-sdk 0.1");

    let unknown_key = plugin_dir(
        &workspace().join("plugins/hostname"),
        "wulf-plugin-hostname",
    );
    let manifest = unknown_key.path().join("plugin.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_default()
        .replace("[config]", "colour = \"red\"\n[config]");
    std::fs::write(&manifest, text).unwrap_or_else(|e| panic!("{e}"));
    let error = wulf.fails(&[
        "plugin",
        "install",
        &unknown_key.path().display().to_string(),
    ]);
    insta::assert_snapshot!(error.replace(&unknown_key.path().display().to_string(), "[SRC]"), @r#"
    error: [SRC]/plugin.toml: TOML parse error at line 9, column 1
      |
    9 | colour = "red"
      | ^^^^^^
    unknown field `colour`, expected one of `name`, `version`, `world`, `api-version`, `description`, `capabilities`, `shared`, `shared-fields`, `config`
    "#);

    let not_wasm = unknown_key.path().join("notes.wasm");
    std::fs::write(&not_wasm, "hello").unwrap_or_else(|e| panic!("{e}"));
    let error = wulf.fails(&["plugin", "install", &not_wasm.display().to_string()]);
    insta::assert_snapshot!(error.replace(&unknown_key.path().display().to_string(), "[SRC]"), @"error: [SRC]/notes.wasm: not a WebAssembly component: the file has no WebAssembly header");

    insta::assert_snapshot!(wulf.fails(&["plugin", "remove", "hostname"]), @"error: plugin `hostname` is built into wulf and cannot be removed; `wulf plugin disable hostname` turns it off");
    insta::assert_snapshot!(wulf.fails(&["plugin", "show", "nope"]), @"error: no plugin named `nope` (see `wulf plugin list`)");
    assert!(!wulf.path().join("plugins/old-api").exists());
    let listed: serde_json::Value =
        serde_json::from_str(&wulf.ok(&["plugin", "list", "--json"])).unwrap_or_default();
    let sources: Vec<&str> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["source"].as_str())
        .collect();
    assert!(
        sources.iter().all(|s| *s == "embedded"),
        "nothing was installed: {sources:?}"
    );
}

#[test]
fn capabilities_need_a_grant() {
    let wulf = Wulf::new();
    wulf.write("nodes.toml", NODES);
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(data.path().join("banner"), "granted\n").unwrap_or_else(|e| panic!("{e}"));
    let src = plugin_dir(&fixture_dir("reader"), "wulf-fixture-reader");
    let dir = data.path().display().to_string();
    let manifest = format!(
        "{}\n[capabilities]\nread-dirs = [\"{dir}\"]\n",
        std::fs::read_to_string(src.path().join("plugin.toml")).unwrap_or_default()
    );
    std::fs::write(src.path().join("plugin.toml"), manifest).unwrap_or_else(|e| panic!("{e}"));

    let error = wulf.fails(&["plugin", "install", &src.path().display().to_string()]);
    insta::assert_snapshot!(error.replace(&dir, "[DATA]"), @"error: `reader` was not installed: plugin `reader` asks to read [DATA], which the site configuration does not grant; to allow it add the directory to `grant-read-dirs` under [plugin.reader] in wulf.toml");
    assert!(
        !wulf.path().join("plugins/reader").exists(),
        "a refused plugin is not left installed"
    );

    wulf.write("wulf.toml", &format!("[plugin.reader]\ngrant-read-dirs = [\"{dir}\"]\nconfig = {{ file = \"{dir}/banner\" }}\n"));
    wulf.ok(&["plugin", "install", &src.path().display().to_string()]);
    insta::assert_snapshot!(wulf.ok(&["plugin", "test", "reader", "--node", "n001"]), @"
    /etc/from-host 0644 0:0 8 file
        granted
    /etc/write-attempt 0644 0:0 13 file
        write refused
    ");
}

#[test]
fn a_hostile_plugin_fails_with_its_name_and_cause() {
    let wulf = Wulf::new();
    wulf.write("nodes.toml", NODES);
    wulf.write("wulf.toml", "[plugin.looping]\nlimits = { timeout-ms = 200 }\n[plugin.membomb]\nlimits = { memory-mib = 16 }\n");
    for name in ["looping", "membomb", "panicking", "escaping"] {
        let src = plugin_dir(&fixture_dir(name), &format!("wulf-fixture-{name}"));
        wulf.ok(&["plugin", "install", &src.path().display().to_string()]);
    }
    let errors: Vec<String> = ["looping", "membomb", "panicking", "escaping"]
        .iter()
        .map(|name| wulf.fails(&["plugin", "test", name, "--node", "n001"]))
        .collect();
    insta::assert_snapshot!(errors.join(""), @r#"
    error: plugin `looping` was stopped: it exceeded its time limit of 200 ms
    error: plugin `membomb` was stopped: it exceeded its memory limit of 16 MiB
    error: plugin `panicking` crashed: wasm trap: wasm `unreachable` instruction executed; its stderr: panicked at tests/fixtures/panicking/src/lib.rs:8:9: fixture panicked on purpose for n001
    error: plugin `escaping` returned invalid output: path "/../../etc/passwd" contains `..`
    "#);
    insta::assert_snapshot!(wulf.fails(&["plugin", "test", "hostname", "--node", "n404"]), @"error: node `n404` does not exist (add it with `wulf node add`)");
    insta::assert_snapshot!(wulf.fails(&["plugin", "test", "hostname"]), @"error: which node? pass --node <id> (see the nodes in nodes.toml)");
    wulf.ok(&["plugin", "test", "hostname", "--node", "n001"]);
}

#[test]
fn a_bad_site_config_names_file_and_key() {
    let wulf = Wulf::new();
    wulf.write("wulf.toml", "[plugins.limits]\ntimeout-ms = 0\n");
    insta::assert_snapshot!(wulf.fails(&["plugin", "list"]), @"error: [STATE]/wulf.toml: `plugins.limits.timeout-ms` = 0: must be between 1 and 600000");
    let missing = wulf.fails(&["--config", "/nonexistent/wulf.toml", "plugin", "list"]);
    insta::assert_snapshot!(missing, @"error: cannot read /nonexistent/wulf.toml: No such file or directory (os error 2)");
}

#[test]
fn host_keys_go_to_first_party_plugins_or_granted_ones() {
    let wulf = Wulf::new();
    wulf.write("nodes.toml", NODES);
    // The embedded plugin gets them; they are generated on first use and then kept.
    let files: serde_json::Value = serde_json::from_str(&wulf.ok(&[
        "plugin",
        "test",
        "ssh-host-keys",
        "--node",
        "n001",
        "--json",
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    let files = files.as_array().unwrap_or_else(|| panic!("{files}"));
    let listed: Vec<_> = files
        .iter()
        .map(|f| format!("{} {}", f["path"].as_str().unwrap_or(""), f["mode"]))
        .collect();
    insta::assert_snapshot!(listed.join("\n"), @r#"
    /etc/ssh "0755"
    /etc/ssh/ssh_host_ecdsa_key "0600"
    /etc/ssh/ssh_host_ecdsa_key.pub "0644"
    /etc/ssh/ssh_host_ed25519_key "0600"
    /etc/ssh/ssh_host_ed25519_key.pub "0644"
    /etc/ssh/ssh_host_rsa_key "0600"
    /etc/ssh/ssh_host_rsa_key.pub "0644"
    "#);
    for file in files.iter().skip(1) {
        let path = file["path"].as_str().unwrap_or_default();
        let name = path.trim_start_matches("/etc/ssh/");
        let on_host = std::fs::read_to_string(wulf.path().join("keys").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(file["content"].as_str(), Some(on_host.as_str()), "{path}");
    }
    let shown = wulf.ok(&["configure", "ssh", "--json"]);
    let again = wulf.ok(&["configure", "ssh", "--json"]);
    assert_eq!(shown, again, "the keys are generated once");
    let regenerated = wulf.ok(&["configure", "ssh", "--regenerate", "--json"]);
    assert_ne!(shown, regenerated);

    // A directory plugin asking for them needs the admin's grant.
    let src = plugin_dir(
        &workspace().join("plugins/ssh-host-keys"),
        "wulf-plugin-ssh-host-keys",
    );
    let manifest = std::fs::read_to_string(src.path().join("plugin.toml"))
        .unwrap_or_default()
        .replace("name = \"ssh-host-keys\"", "name = \"site-keys\"");
    std::fs::write(src.path().join("plugin.toml"), manifest).unwrap_or_else(|e| panic!("{e}"));
    let error = wulf.fails(&["plugin", "install", &src.path().display().to_string()]);
    insta::assert_snapshot!(error, @"error: `site-keys` was not installed: plugin `site-keys` asks for the cluster's SSH host keys, which the site configuration does not grant; to allow it set `grant-ssh-host-keys = true` under [plugin.site-keys] in wulf.toml");
    wulf.write(
        "wulf.toml",
        "[plugin.site-keys]\ngrant-ssh-host-keys = true\n",
    );
    wulf.ok(&["plugin", "install", &src.path().display().to_string()]);
    wulf.ok(&["plugin", "test", "site-keys", "--node", "n001"]);
}

/// `hosts` needs every node: it reads them from the host a page at a time (the
/// cluster-overlay-generator world), so 100,000 nodes fit its default memory limit (64 MiB),
/// which one list of every record overflowed.
#[test]
fn hosts_makes_the_file_of_100000_nodes_within_the_default_memory_limit() {
    let wulf = Wulf::new();
    let mut nodes = String::from(
        "[profiles.default]\n[profiles.default.network-devices.default]\nnetmask = \"255.0.0.0\"\n",
    );
    for n in 0..100_000u32 {
        let (a, b, c) = (n >> 16, (n >> 8) & 0xff, n & 0xff);
        nodes.push_str(&format!(
            "[nodes.n{n:06}]\nprofiles = [\"default\"]\n[nodes.n{n:06}.network-devices.default]\nipaddr = \"10.{a}.{b}.{c}\"\n[nodes.n{n:06}.ipmi]\nipaddr = \"12.{a}.{b}.{c}\"\n"
        ));
    }
    wulf.write("nodes.toml", &nodes);
    // The memory limit is what this is about: this debug build converts records ~6x slower
    // than a release build, which makes the file in about 1 s.
    wulf.write(
        "wulf.toml",
        "[plugin.hosts]\nlimits = { timeout-ms = 60000 }\n",
    );
    let out = wulf.ok(&["plugin", "test", "hosts", "--node", "n000007"]);
    assert!(
        out.starts_with("/etc/hosts 0644 0:0 "),
        "{}",
        &out[..out.len().min(500)]
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"    10.0.0.0 n000000 n000000-default"));
    assert!(lines.contains(&"    10.1.134.159 n099999 n099999-default"));
    assert!(lines.contains(&"    12.1.134.159 n099999-ipmi"));
    assert_eq!(
        lines.iter().filter(|l| l.contains("-ipmi")).count(),
        100_000,
        "every node's BMC is named"
    );
}
