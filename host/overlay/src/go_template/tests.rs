//! Each case is a Go template as Warewulf sites write them and the output Warewulf's
//! documented semantics give for the node below (written by hand from Go's `text/template`
//! rules: `{{-`/`-}}` trim all whitespace on their side, maps range in key order, a missing
//! field prints empty).

use minijinja::Value;
use minijinja::value::Serde;
use wulf_core::Node;

use super::*;
use crate::render::node_json;
use crate::template::{Rendered, Templates};

const ORIGIN: Origin<'static> = Origin {
    source: "site/rootfs/etc/hosts.ww",
    sysconf: "/etc/warewulf",
};

fn node(id: &str, cluster: &str) -> Node {
    let toml = format!(
        r#"
cluster = "{cluster}"
image = "rocky"
profiles = ["default", "ib"]
kernel.args = ["console=ttyS0,115200", "quiet"]
tags = {{ rack = "r12" }}
ipmi = {{ ipaddr = "10.9.0.1" }}
[network-devices.default]
device = "eth0"
ipaddr = "10.0.0.{last}"
netmask = "255.255.0.0"
mtu = 9000
[network-devices.ib]
ipaddr = "10.1.0.{last}"
[network-devices.mgmt]
device = "eth2"
"#,
        last = &id[1..]
    );
    let mut node: Node = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}"));
    node.id = id.into();
    node
}

fn translated(go: &str) -> Translation {
    let t = translate(go, ORIGIN);
    assert!(
        t.problems.is_empty(),
        "problems: {:?}\n{}",
        t.problems,
        t.text
    );
    t
}

fn render(go: &str) -> Vec<Rendered> {
    let t = translated(go);
    let nodes = [node("n1", "prod"), node("n2", "test")];
    let cluster: Vec<_> = nodes.iter().map(node_json).collect();
    let ctx = minijinja::context! {
        node => Value::from(Serde(node_json(&nodes[0]))),
        cluster => Value::from(Serde(serde_json::json!({ "nodes": cluster }))),
        server => Value::from(Serde(serde_json::json!({
            "hostname": "head", "ipaddr": "10.0.0.254", "netmask": "255.255.0.0",
            "network": "10.0.0.0", "port": 9873,
        }))),
        build => minijinja::context! { time => 1_700_000_000u64 },
        overlay => "site",
    };
    let mut templates = Templates::new();
    templates
        .add("t", t.text.clone())
        .unwrap_or_else(|e| panic!("{e}\n{}", t.text));
    templates
        .render("t", "/etc/hosts", &ctx)
        .unwrap_or_else(|e| panic!("{e}\n{}", t.text))
}

fn one(go: &str) -> String {
    match render(go).as_slice() {
        [Rendered::File { content, .. }] => content.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_hosts_template_with_ranges_ifs_and_trim_markers() {
    let go = "# from {{ .BuildSource }}\n\
{{- range $devname, $netdev := .NetDevs }}\n\
{{- if $netdev.Ipaddr }}\n\
{{ $netdev.Ipaddr }} {{ $.Id }}-{{ $devname }}{{ if eq $devname \"default\" }} {{ $.Id }}{{ end }}\n\
{{- end }}\n\
{{- end }}\n\
{{ .Ipaddr }} {{ .BuildHost }} warewulf\n";
    assert_eq!(
        one(go),
        "# from site/rootfs/etc/hosts.ww\n10.0.0.1 n1-default n1\n10.1.0.1 n1-ib\n10.0.0.254 head warewulf\n"
    );
}

#[test]
fn line_numbers_match_the_go_source() {
    let go = "a\n{{- range .NetDevs }}\n\n  {{- .Device -}}\n\n{{ end }}\nb\n";
    let t = translated(go);
    assert_eq!(
        t.text.matches('\n').count(),
        go.matches('\n').count(),
        "{}",
        t.text
    );
    assert_eq!(one(go), "aeth0eth2\nb\n");
}

#[test]
fn all_nodes_file_abort_and_printf() {
    let go = "{{ range $n := .AllNodes }}{{ file (printf \"nodes/%s.conf\" $n.Id) }}id={{ $n.Id }} cluster={{ $n.ClusterName }} first={{ index $n.Profiles 0 }}\n{{ if ne $n.ClusterName \"prod\" }}{{ abort }}{{ end }}{{ end }}";
    assert_eq!(
        render(go),
        [Rendered::File {
            path: "/etc/nodes/n1.conf".into(),
            content: "id=n1 cluster=prod first=default\n".into()
        }]
    );
}

#[test]
fn with_else_default_pipelines_and_missing_fields() {
    let go = "{{ with .Ipmi.Ipaddr }}ipmi={{ . }}{{ else }}no ipmi{{ end }}\n\
{{ with .Ipmi.Gateway }}gw={{ . }}{{ else }}no gateway for {{ .Id }}{{ end }}\n\
args={{ .Kernel.Args }}\n\
{{ printf \"%s:%d %q\" .Id .NetDevs.default.MTU .ImageName }}\n\
{{ .Tags.rack | upper }} {{ .Tags.row | default \"none\" }}\n\
[{{ .Tags.missing }}][{{ .NetDevs.mgmt.Ipaddr }}][{{ .Comment }}]\n\
{{ join \",\" .Profiles }}\n\
{{- /* a comment with }} in it */}}\n\
{{ $x := .Id }}{{ $x }}-{{ len .NetDevs }}-{{ .NetDevs.default.IpCIDR }}\n";
    assert_eq!(
        one(go),
        "ipmi=10.9.0.1\nno gateway for n1\nargs=console=ttyS0,115200 quiet\nn1:9000 \"rocky\"\nR12 none\n[][][]\ndefault,ib\nn1-3-10.0.0.1/16\n"
    );
}

#[test]
fn sprig_string_functions() {
    let go = "{{ trimSuffix \".example.com\" \"n1.example.com\" }} {{ trimPrefix \"n\" .Id }} \
{{ hasPrefix \"n\" .Id }} {{ hasSuffix \"x\" .Id }} {{ replace \"-\" \"_\" \"a-b-c\" }} \
{{ contains \"0.0\" .NetDevs.default.Ipaddr }} {{ quote .Id }} {{ lower \"AB\" }} \
{{ ternary \"yes\" \"no\" (eq .ClusterName \"prod\") }} {{ inc 41 }} {{ add 1 2 }}\n";
    assert_eq!(one(go), "n1 1 true false a_b_c true \"n1\" ab yes 42 3\n");
}

#[test]
fn shell_text_that_looks_like_minijinja_stays_text() {
    let go = "n=${#arr[@]} {% raw %} {{ .Id }}\n";
    assert_eq!(one(go), "n=${#arr[@]} {% raw %} n1\n");
}

#[test]
fn include_resolves_relative_paths_under_warewulfs_configuration_directory() {
    let t = translated("{{ Include \"keys/munge.key\" }}{{ Include \"/etc/motd\" }}");
    assert!(
        t.text.contains("include(\"/etc/warewulf/keys/munge.key\")"),
        "{}",
        t.text
    );
    assert!(t.text.contains("include(\"/etc/motd\")"), "{}", t.text);
}

#[test]
fn build_time_translates_with_a_note() {
    let t = translate("# built {{ .BuildTime }}\n", ORIGIN);
    assert!(t.problems.is_empty());
    assert_eq!(t.notes.len(), 1, "{:?}", t.notes);
    assert_eq!(t.notes[0].line, 1);
}

#[test]
fn what_cannot_be_translated_is_named_with_its_line() {
    let go = "ok {{ .Id }}\n{{ template \"x\" . }}\n{{ .Dhcp.RangeStart }}\n{{ printf \"%05d\" 1 }}\n{{ IncludeBlock \"f\" \"m\" }}\n{{ .Ipmi.Vlan }}\n{{ if .Id }}\n";
    let t = translate(go, ORIGIN);
    let lines: Vec<usize> = t.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 7], "{:?}", t.problems);
    let text: Vec<&str> = t.problems.iter().map(|p| p.text.as_str()).collect();
    assert!(text[0].contains("template"), "{text:?}");
    assert!(text[1].contains("Dhcp"), "{text:?}");
    assert!(text[2].contains("%0"), "{text:?}");
    assert!(text[3].contains("IncludeBlock"), "{text:?}");
    assert!(text[4].contains("Vlan"), "{text:?}");
    assert!(text[5].contains("not closed"), "{text:?}");
}
