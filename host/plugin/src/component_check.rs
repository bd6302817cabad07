//! Reads a component's top-level imports and exports before it is compiled, and checks them
//! against the world its manifest names: the right export, a compatible `wulf:plugin` version,
//! and nothing imported that the host does not provide. Cheap, and it gives a plain message
//! where the linker would only say "matching implementation was not found".

use wasmparser::{Parser, Payload};

use crate::manifest::{API_VERSION, Version, World};

/// What a component imports and exports at its top level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Surface {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Why a component does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SurfaceError {
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error(
        "it was built against wulf:plugin@{found}, but this host implements wulf:plugin@{API_VERSION}; rebuild it with wulf-sdk {}.{}",
        API_VERSION.major,
        API_VERSION.minor
    )]
    IncompatibleApi { found: Version },
    #[error(
        "it does not export `wulf:plugin/{export}` (the manifest says world `{world}`); it exports: {exports}"
    )]
    MissingExport {
        world: World,
        export: &'static str,
        exports: String,
    },
    #[error("it imports `{import}`, which no wulf host provides")]
    UnknownImport { import: String },
}

/// Lists the top-level imports and exports of a component binary.
pub fn surface(wasm: &[u8]) -> Result<Surface, SurfaceError> {
    if !wasm.starts_with(b"\0asm") {
        return Err(SurfaceError::NotAComponent(
            "the file has no WebAssembly header".into(),
        ));
    }
    let mut surface = Surface::default();
    let mut depth = 0usize;
    let mut is_component = false;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| SurfaceError::NotAComponent(e.to_string()))?;
        match payload {
            Payload::Version { encoding, .. } if depth == 0 => {
                is_component = encoding == wasmparser::Encoding::Component;
                if !is_component {
                    return Err(SurfaceError::NotAComponent(
                        "it is a core module; build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)".into(),
                    ));
                }
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| SurfaceError::NotAComponent(e.to_string()))?;
                    surface.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| SurfaceError::NotAComponent(e.to_string()))?;
                    surface.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    if !is_component {
        return Err(SurfaceError::NotAComponent("empty input".into()));
    }
    Ok(surface)
}

/// The export of the `node-overlay-generator` world: an overlay generator with only
/// `generate`, no shared files.
pub const NODE_GENERATOR: &str = "node-generator";

/// The export of the `cluster-overlay-generator` world: shared files read the cluster a page
/// at a time through the imported `cluster`.
pub const CLUSTER_GENERATOR: &str = "cluster-generator";

/// Whether an overlay generator exports `cluster-generator` rather than `generator`.
pub fn exports_cluster_generator(surface: &Surface) -> bool {
    surface
        .exports
        .iter()
        .any(|e| wulf_interface(e).is_some_and(|(iface, _)| iface == CLUSTER_GENERATOR))
}

/// Whether an overlay generator exports `node-generator` (only `generate`) rather than
/// `generator`.
pub fn exports_node_generator(surface: &Surface) -> bool {
    let has = |wanted: &str| {
        surface
            .exports
            .iter()
            .any(|e| wulf_interface(e).is_some_and(|(iface, _)| iface == wanted))
    };
    has(NODE_GENERATOR) && !has(World::OverlayGenerator.export())
}

/// Splits `wulf:plugin/generator@0.1.0` into (`generator`, version).
fn wulf_interface(name: &str) -> Option<(&str, Option<Version>)> {
    let rest = name.strip_prefix("wulf:plugin/")?;
    match rest.split_once('@') {
        Some((iface, version)) => Some((iface, Version::parse(version))),
        None => Some((rest, None)),
    }
}

/// Checks a component's surface against `world` at this host's API version.
pub fn check(surface: &Surface, world: World) -> Result<(), SurfaceError> {
    for name in surface.imports.iter().chain(&surface.exports) {
        if let Some((_, Some(found))) = wulf_interface(name)
            && !found.compatible_with(API_VERSION)
        {
            return Err(SurfaceError::IncompatibleApi { found });
        }
    }
    let exported = surface.exports.iter().any(|e| {
        wulf_interface(e).is_some_and(|(iface, _)| {
            iface == world.export()
                || (world == World::OverlayGenerator
                    && (iface == NODE_GENERATOR || iface == CLUSTER_GENERATOR))
        })
    });
    if !exported {
        return Err(SurfaceError::MissingExport {
            world,
            export: world.export(),
            exports: if surface.exports.is_empty() {
                "nothing".into()
            } else {
                surface.exports.join(", ")
            },
        });
    }
    for import in &surface.imports {
        let known = match wulf_interface(import) {
            Some((iface, _)) => matches!(iface, "host" | "types" | "cluster"),
            None => import.starts_with("wasi:"),
        };
        if !known {
            return Err(SurfaceError::UnknownImport {
                import: import.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn surface_of(imports: &[&str], exports: &[&str]) -> Surface {
        Surface {
            imports: imports.iter().map(|s| s.to_string()).collect(),
            exports: exports.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn accepts_compatible_and_refuses_the_rest() {
        let good = surface_of(
            &["wasi:cli/stderr@0.2.6", "wulf:plugin/host@0.1.3"],
            &["wulf:plugin/generator@0.1.0"],
        );
        assert_eq!(check(&good, World::OverlayGenerator), Ok(()));
        assert!(matches!(
            check(&good, World::ImageTransform),
            Err(SurfaceError::MissingExport { .. })
        ));
        let old = surface_of(
            &["wulf:plugin/host@0.2.0"],
            &["wulf:plugin/generator@0.2.0"],
        );
        assert_eq!(
            check(&old, World::OverlayGenerator).map_err(|e| e.to_string()),
            Err("it was built against wulf:plugin@0.2.0, but this host implements wulf:plugin@0.1.0; rebuild it with wulf-sdk 0.1".into())
        );
        let node_only = surface_of(
            &["wulf:plugin/host@0.1.0"],
            &["wulf:plugin/node-generator@0.1.0"],
        );
        assert_eq!(check(&node_only, World::OverlayGenerator), Ok(()));
        assert!(exports_node_generator(&node_only));
        assert!(!exports_node_generator(&good));
        let paged = surface_of(
            &["wulf:plugin/host@0.1.0", "wulf:plugin/cluster@0.1.0"],
            &["wulf:plugin/cluster-generator@0.1.0"],
        );
        assert_eq!(check(&paged, World::OverlayGenerator), Ok(()));
        assert!(exports_cluster_generator(&paged));
        assert!(!exports_cluster_generator(&good));
        let odd = surface_of(&["acme:db/query"], &["wulf:plugin/generator@0.1.0"]);
        assert!(matches!(
            check(&odd, World::OverlayGenerator),
            Err(SurfaceError::UnknownImport { .. })
        ));
    }

    #[test]
    fn refuses_core_modules_and_garbage() {
        let core_module = b"\0asm\x01\0\0\0";
        assert!(matches!(
            surface(core_module),
            Err(SurfaceError::NotAComponent(_))
        ));
        assert!(matches!(
            surface(b"hello"),
            Err(SurfaceError::NotAComponent(_))
        ));
    }
}
