//! Host bindings, generated in exactly one place. The shared `types` and `host` interfaces are
//! generated with the overlay world and reused by the others, so one `Host` impl serves all.
//! Generated types never leave this crate: `conversion` maps them to `wulf-core` types.

pub(crate) mod overlay {
    wasmtime::component::bindgen!({
        world: "overlay-generator",
        path: "../../wit/v0.1",
        imports: { default: trappable },
    });
}

pub(crate) mod node_overlay {
    wasmtime::component::bindgen!({
        world: "node-overlay-generator",
        path: "../../wit/v0.1",
        imports: { default: trappable },
        with: {
            "wulf:plugin/types": super::overlay::wulf::plugin::types,
            "wulf:plugin/host": super::overlay::wulf::plugin::host,
        },
    });
}

pub(crate) mod cluster_overlay {
    wasmtime::component::bindgen!({
        world: "cluster-overlay-generator",
        path: "../../wit/v0.1",
        imports: { default: trappable },
        with: {
            "wulf:plugin/types": super::overlay::wulf::plugin::types,
            "wulf:plugin/host": super::overlay::wulf::plugin::host,
        },
    });
}

pub(crate) mod inventory {
    wasmtime::component::bindgen!({
        world: "inventory-backend",
        path: "../../wit/v0.1",
        imports: { default: trappable },
        with: {
            "wulf:plugin/types": super::overlay::wulf::plugin::types,
            "wulf:plugin/host": super::overlay::wulf::plugin::host,
        },
    });
}

pub(crate) mod transform {
    wasmtime::component::bindgen!({
        world: "image-transform",
        path: "../../wit/v0.1",
        imports: { default: trappable },
        with: {
            "wulf:plugin/types": super::overlay::wulf::plugin::types,
            "wulf:plugin/host": super::overlay::wulf::plugin::host,
        },
    });
}

pub(crate) use overlay::wulf::plugin::host::Level;
pub(crate) use overlay::wulf::plugin::types as wit;
