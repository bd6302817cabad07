//! The cluster as a [`ClusterOverlayGenerator`](crate::ClusterOverlayGenerator) reads it.

use crate::Node;

/// Nodes asked of the host at a time.
const PAGE: u32 = 256;

/// Every node of the cluster, merged with its profiles, in name order. In a plugin the nodes
/// come from the host a page at a time as [`nodes`](Self::nodes) is iterated; in native unit
/// tests they come from a list ([`Cluster::from`]).
#[derive(Debug)]
pub struct Cluster {
    /// The nodes of a native test; unused in a plugin, where the host holds them.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    nodes: Vec<Node>,
}

impl From<Vec<Node>> for Cluster {
    /// A cluster of these nodes, for unit tests (sorted by name, as the host sends them).
    fn from(mut nodes: Vec<Node>) -> Self {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Cluster { nodes }
    }
}

impl Cluster {
    /// The cluster the host hands the current `generate-shared` call.
    pub(crate) fn of_host() -> Self {
        Cluster { nodes: Vec::new() }
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::cluster::wulf::plugin::cluster::size() as usize
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.nodes.len()
        }
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The nodes in name order, a page at a time: only the current page is held.
    pub fn nodes(&self) -> impl Iterator<Item = Node> + '_ {
        let mut start = 0u32;
        let mut page = Vec::new().into_iter();
        std::iter::from_fn(move || {
            if let Some(node) = page.next() {
                return Some(node);
            }
            let next = self.page(start);
            start = start.saturating_add(next.len() as u32);
            page = next.into_iter();
            page.next()
        })
    }

    #[cfg(target_arch = "wasm32")]
    fn page(&self, start: u32) -> Vec<Node> {
        crate::bindings::cluster::wulf::plugin::cluster::nodes(start, PAGE)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn page(&self, start: u32) -> Vec<Node> {
        self.nodes
            .iter()
            .skip(start as usize)
            .take(PAGE as usize)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_come_in_name_order_across_pages() {
        let cluster = Cluster::from(
            (0..600)
                .rev()
                .map(|n| Node::new(format!("n{n:04}")))
                .collect::<Vec<_>>(),
        );
        assert_eq!(cluster.len(), 600);
        let ids: Vec<String> = cluster.nodes().map(|n| n.id).collect();
        assert_eq!(ids.len(), 600);
        assert_eq!(ids.first().map(String::as_str), Some("n0000"));
        assert_eq!(ids.last().map(String::as_str), Some("n0599"));
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(Cluster::from(Vec::new()).is_empty());
    }
}
