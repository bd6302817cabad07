//! `csv-inventory`: nodes from a CSV file, for sites that keep their hardware list in a
//! spreadsheet or export it from a CMDB. The file lives in a directory the admin grants
//! read-only; the plugin cannot see anything else.
//!
//! The header names the columns, in any order: `id` (required), `hwaddr`, `ipaddr`, `netmask`,
//! `gateway`, `netname` (default `default`), `device`, `profiles` (`;`-separated), `image`,
//! `cluster`, `ipmiaddr`, `comment`. Empty cells are unset. Rows starting with `#` are comments.

use wulf_sdk::{InventoryBackend, NetDevice, Node, PluginError};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    file: String,
    /// Profiles for rows whose `profiles` cell is empty.
    #[serde(default)]
    profiles: Vec<String>,
}

const COLUMNS: [&str; 12] = [
    "id", "hwaddr", "ipaddr", "netmask", "gateway", "netname", "device", "profiles", "image",
    "cluster", "ipmiaddr", "comment",
];

/// Parses CSV text into nodes; `default_profiles` fill empty `profiles` cells.
pub fn parse(text: &str, default_profiles: &[String]) -> Result<Vec<Node>, PluginError> {
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| PluginError::InvalidInput(format!("header: {e}")))?
        .clone();
    if let Some(unknown) = headers.iter().find(|h| !COLUMNS.contains(h)) {
        return Err(PluginError::InvalidInput(format!(
            "unknown column `{unknown}`; known: {}",
            COLUMNS.join(", ")
        )));
    }
    if !headers.iter().any(|h| h == "id") {
        return Err(PluginError::InvalidInput(
            "the header has no `id` column".into(),
        ));
    }
    let mut nodes = Vec::new();
    for (index, row) in reader.records().enumerate() {
        let row = row.map_err(|e| PluginError::InvalidInput(format!("row {}: {e}", index + 2)))?;
        let cell = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .and_then(|i| row.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let id = cell("id")
            .ok_or_else(|| PluginError::InvalidInput(format!("row {}: empty id", index + 2)))?;
        let mut node = Node::new(id);
        node.profiles = match cell("profiles") {
            Some(list) => list
                .split(';')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            None => default_profiles.to_vec(),
        };
        node.image = cell("image");
        node.cluster = cell("cluster");
        node.comment = cell("comment");
        node.ipmi.ipaddr = cell("ipmiaddr");
        let mut device = NetDevice::new(cell("netname").unwrap_or_else(|| "default".into()));
        device.hwaddr = cell("hwaddr").map(|h| h.to_ascii_lowercase().replace('-', ":"));
        device.ipaddr = cell("ipaddr");
        device.netmask = cell("netmask");
        device.gateway = cell("gateway");
        device.device = cell("device");
        if device.hwaddr.is_some() || device.ipaddr.is_some() || device.device.is_some() {
            node.network_devices.push(device);
        }
        nodes.push(node);
    }
    Ok(nodes)
}

pub struct CsvInventory;

impl InventoryBackend for CsvInventory {
    fn list_nodes() -> Result<Vec<Node>, PluginError> {
        let config: Config = wulf_sdk::config()?;
        let text = std::fs::read_to_string(&config.file).map_err(|e| {
            PluginError::Config(format!(
                "cannot read {}: {e} (is its directory granted?)",
                config.file
            ))
        })?;
        parse(&text, &config.profiles)
    }
}

wulf_sdk::register_inventory_backend!(CsvInventory);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_nodes() {
        let text = "# site inventory\nid,hwaddr,ipaddr,profiles,image\nc001,AA-BB-CC-00-00-01,10.1.0.1,,rocky\nc002,aa:bb:cc:00:00:02,,default;gpu,\n";
        let nodes = parse(text, &["default".to_string()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nodes.len(), 2);
        assert_eq!(
            nodes[0].network_devices[0].hwaddr.as_deref(),
            Some("aa:bb:cc:00:00:01")
        );
        assert_eq!(
            (nodes[0].profiles.clone(), nodes[0].image.as_deref()),
            (vec!["default".to_string()], Some("rocky"))
        );
        assert_eq!(nodes[1].profiles, ["default", "gpu"]);
        assert_eq!(nodes[1].image, None);
    }

    #[test]
    fn bad_files_are_named() {
        let err = |text: &str| {
            parse(text, &[])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("id,colour\nc1,red\n").contains("unknown column `colour`"));
        assert!(err("hwaddr\naa:bb:cc:dd:ee:ff\n").contains("no `id` column"));
        assert!(err("id,ipaddr\n,10.0.0.1\n").contains("row 2: empty id"));
    }
}
