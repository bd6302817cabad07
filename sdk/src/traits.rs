//! The plugin traits and the adapters their macros export.

use std::any::Any;
use std::cell::RefCell;

use crate::bindings::{cluster, inventory, overlay, transform};
use crate::{Cluster, FileEntry, Node, PluginError, Server};

pub use crate::bindings::transform::exports::wulf::plugin::transform::{Action, Entry, EntryKind};

/// An overlay generator: renders files for nodes. Register it with
/// [`register_overlay_generator!`](crate::register_overlay_generator).
pub trait OverlayGenerator {
    /// Files for one node (merged with its profiles). Paths are absolute inside the node's root.
    fn generate(node: &Node, server: &Server) -> Result<Vec<FileEntry>, PluginError>;

    /// Files that are the same for every node, computed once per build from all nodes (e.g.
    /// `/etc/hosts`). The default returns none.
    fn generate_shared(nodes: &[Node], server: &Server) -> Result<Vec<FileEntry>, PluginError> {
        let _ = (nodes, server);
        Ok(Vec::new())
    }
}

/// An overlay generator whose shared files need the whole cluster, at any size (a hosts file,
/// a DNS zone, a scheduler's node list): [`generate_shared`](Self::generate_shared) reads the
/// nodes from a [`Cluster`] a page at a time, so a plugin holds one page of records and what
/// it makes of them, never every record. Register it with
/// [`register_cluster_overlay_generator!`](crate::register_cluster_overlay_generator).
pub trait ClusterOverlayGenerator {
    /// Files for one node (merged with its profiles). Paths are absolute inside the node's root.
    fn generate(node: &Node, server: &Server) -> Result<Vec<FileEntry>, PluginError>;

    /// Files that are the same for every node, computed once per build from the cluster.
    fn generate_shared(cluster: &Cluster, server: &Server) -> Result<Vec<FileEntry>, PluginError>;
}

/// An inventory backend: a source of nodes and profiles. Register it with
/// [`register_inventory_backend!`](crate::register_inventory_backend).
pub trait InventoryBackend {
    /// Every node this backend knows, unmerged.
    fn list_nodes() -> Result<Vec<Node>, PluginError>;

    /// Every profile this backend knows. The default returns none.
    fn list_profiles() -> Result<Vec<Node>, PluginError> {
        Ok(Vec::new())
    }

    /// The node owning `hwaddr` (lowercase, colon-separated). The default scans
    /// [`list_nodes`](Self::list_nodes).
    fn lookup_hwaddr(hwaddr: &str) -> Result<Option<Node>, PluginError> {
        Ok(Self::list_nodes()?.into_iter().find(|n| {
            n.network_devices.iter().any(|d| {
                d.hwaddr
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(hwaddr))
            })
        }))
    }

    /// A node booted with an unknown `hwaddr`; return the node it becomes to take it. The
    /// default takes none.
    fn accept_discovered(hwaddr: &str) -> Result<Option<Node>, PluginError> {
        let _ = hwaddr;
        Ok(None)
    }
}

/// An image transform: sees every entry of an image while it is built, in order, and keeps,
/// drops or replaces it. One value lives for one build. Register it with
/// [`register_image_transform!`](crate::register_image_transform).
pub trait ImageTransform: Sized + 'static {
    /// Starts a build of the named image.
    fn begin(image: &str) -> Result<Self, PluginError>;

    /// Decides on one entry from its metadata. Answer [`Action::WantContent`] to see the
    /// content in [`rewrite`](Self::rewrite).
    fn filter(&mut self, entry: &Entry) -> Result<Action, PluginError>;

    /// Decides on an entry given its content. The default keeps it.
    fn rewrite(&mut self, entry: &Entry, content: Vec<u8>) -> Result<Action, PluginError> {
        let _ = (entry, content);
        Ok(Action::Keep)
    }

    /// Files to add after the last entry. The default adds none.
    fn finish(&mut self) -> Result<Vec<FileEntry>, PluginError> {
        Ok(Vec::new())
    }
}

#[doc(hidden)]
pub struct __OverlayAdapter<T>(std::marker::PhantomData<T>);

impl<T: OverlayGenerator> overlay::exports::wulf::plugin::generator::Guest for __OverlayAdapter<T> {
    fn generate(node: Node, server: Server) -> Result<Vec<FileEntry>, PluginError> {
        T::generate(&node, &server)
    }

    fn generate_shared(nodes: Vec<Node>, server: Server) -> Result<Vec<FileEntry>, PluginError> {
        T::generate_shared(&nodes, &server)
    }
}

#[doc(hidden)]
pub struct __ClusterAdapter<T>(std::marker::PhantomData<T>);

impl<T: ClusterOverlayGenerator> cluster::exports::wulf::plugin::cluster_generator::Guest
    for __ClusterAdapter<T>
{
    fn generate(node: Node, server: Server) -> Result<Vec<FileEntry>, PluginError> {
        T::generate(&node, &server)
    }

    fn generate_shared(server: Server) -> Result<Vec<FileEntry>, PluginError> {
        T::generate_shared(&Cluster::of_host(), &server)
    }
}

#[doc(hidden)]
pub struct __InventoryAdapter<T>(std::marker::PhantomData<T>);

impl<T: InventoryBackend> inventory::exports::wulf::plugin::backend::Guest
    for __InventoryAdapter<T>
{
    fn list_nodes() -> Result<Vec<Node>, PluginError> {
        T::list_nodes()
    }

    fn list_profiles() -> Result<Vec<Node>, PluginError> {
        T::list_profiles()
    }

    fn lookup_hwaddr(hwaddr: String) -> Result<Option<Node>, PluginError> {
        T::lookup_hwaddr(&hwaddr)
    }

    fn accept_discovered(hwaddr: String) -> Result<Option<Node>, PluginError> {
        T::accept_discovered(&hwaddr)
    }
}

thread_local! {
    /// The running transform: the host keeps one instance per build and calls into it in turn.
    static TRANSFORM: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with_transform<T: ImageTransform, R>(
    f: impl FnOnce(&mut T) -> Result<R, PluginError>,
) -> Result<R, PluginError> {
    TRANSFORM.with(|cell| {
        match cell
            .borrow_mut()
            .as_mut()
            .and_then(|b| b.downcast_mut::<T>())
        {
            Some(state) => f(state),
            None => Err(PluginError::Failed(
                "the host called the transform before `begin`".into(),
            )),
        }
    })
}

#[doc(hidden)]
pub struct __TransformAdapter<T>(std::marker::PhantomData<T>);

impl<T: ImageTransform> transform::exports::wulf::plugin::transform::Guest
    for __TransformAdapter<T>
{
    fn begin(image: String) -> Result<(), PluginError> {
        let state = T::begin(&image)?;
        TRANSFORM.with(|cell| *cell.borrow_mut() = Some(Box::new(state)));
        Ok(())
    }

    fn filter(entries: Vec<Entry>) -> Result<Vec<Action>, PluginError> {
        with_transform::<T, _>(|t| entries.iter().map(|e| t.filter(e)).collect())
    }

    fn rewrite(entry: Entry, content: Vec<u8>) -> Result<Action, PluginError> {
        with_transform::<T, _>(|t| t.rewrite(&entry, content))
    }

    fn finish() -> Result<Vec<FileEntry>, PluginError> {
        with_transform::<T, _>(|t| t.finish())
    }
}

/// Exports a type implementing [`OverlayGenerator`] as this component's `overlay-generator`.
#[macro_export]
macro_rules! register_overlay_generator {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        type __WulfOverlayGenerator = $crate::__OverlayAdapter<$t>;
        // Native builds (unit tests, benchmarks) link no component exports.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::overlay::__export_overlay_generator!(__WulfOverlayGenerator);
    };
}

/// Exports a type implementing [`ClusterOverlayGenerator`] as this component's
/// `overlay-generator` (the `cluster-overlay-generator` world).
#[macro_export]
macro_rules! register_cluster_overlay_generator {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        type __WulfClusterOverlayGenerator = $crate::__ClusterAdapter<$t>;
        // Native builds (unit tests, benchmarks) link no component exports.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::cluster::__export_cluster_overlay_generator!(
            __WulfClusterOverlayGenerator
        );
    };
}

/// Exports a type implementing [`InventoryBackend`] as this component's `inventory-backend`.
#[macro_export]
macro_rules! register_inventory_backend {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        type __WulfInventoryBackend = $crate::__InventoryAdapter<$t>;
        // Native builds (unit tests, benchmarks) link no component exports.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::inventory::__export_inventory_backend!(__WulfInventoryBackend);
    };
}

/// Exports a type implementing [`ImageTransform`] as this component's `image-transform`.
#[macro_export]
macro_rules! register_image_transform {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        type __WulfImageTransform = $crate::__TransformAdapter<$t>;
        // Native builds (unit tests, benchmarks) link no component exports.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::transform::__export_image_transform!(__WulfImageTransform);
    };
}
