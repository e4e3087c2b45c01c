//! What a component file says about itself before it is compiled: its imports and the
//! toolchain that built it.
//!
//! Compiling a 12–18 MB JavaScript or Python component takes 11–14 s on two cores; a
//! component that imports something the host never grants would be refused after that
//! wait. Reading the import section takes milliseconds, so [`crate::PluginHost::load`]
//! checks imports first, and the refusal names, for each import, what removes it in the
//! toolchain that built the component (read from the `producers` custom sections).

use wasmparser::{ComponentTypeRef, Encoding, KnownCustom, Parser, Payload};

/// The toolchain that built a component, as far as its `producers` sections tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toolchain {
    /// `cargo build --target wasm32-wasip2` (rustc).
    Rust,
    /// componentize-js (StarlingMonkey).
    JavaScript,
    /// componentize-py.
    Python,
}

/// The outside of a component: its top-level imports and its toolchain.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outside {
    /// `package/interface@version` of every top-level import, in order.
    pub(crate) imports: Vec<String>,
    /// Who built it, when the producers sections say so.
    pub(crate) toolchain: Option<Toolchain>,
}

/// Why a file is not a component at all.
#[derive(Debug)]
pub(crate) enum NotAComponent {
    /// A core WebAssembly module (wasm32-wasip1, wasm32-unknown-unknown, …).
    CoreModule,
    /// Not WebAssembly, or damaged; the compiler's message will say more.
    Unreadable,
}

/// Reads the imports and producers of `bytes` without compiling anything.
pub(crate) fn read(bytes: &[u8]) -> Result<Outside, NotAComponent> {
    let mut outside = Outside::default();
    let mut languages = Vec::new();
    let mut tools = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Err(NotAComponent::Unreadable);
        };
        match payload {
            Payload::Version {
                encoding: Encoding::Module,
                ..
            } if depth == 0 => return Err(NotAComponent::CoreModule),
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let Ok(import) = import else {
                        return Err(NotAComponent::Unreadable);
                    };
                    // A world's `use types.{batch}` is a type import equal to the
                    // interface's type: it grants nothing, like wasmtime's own list.
                    if !matches!(import.ty, ComponentTypeRef::Type(_)) {
                        outside.imports.push(import.name.name.to_owned());
                    }
                }
            }
            // componentize-py links CPython and its runtime as shared libraries, whose
            // core modules import from `libcomponentize_py_runtime.so`.
            Payload::ImportSection(reader) if depth > 0 => {
                for imports in reader.into_iter().flatten() {
                    let module = match &imports {
                        wasmparser::Imports::Single(_, import) => import.module,
                        wasmparser::Imports::Compact1 { module, .. }
                        | wasmparser::Imports::Compact2 { module, .. } => module,
                    };
                    if module.contains("componentize_py") {
                        tools.push("componentize-py".to_owned());
                    }
                }
            }
            Payload::CustomSection(section) => {
                if let KnownCustom::Producers(reader) = section.as_known() {
                    for field in reader.into_iter().flatten() {
                        let values: Vec<String> = field
                            .values
                            .into_iter()
                            .flatten()
                            .map(|v| v.name.to_ascii_lowercase())
                            .collect();
                        match field.name {
                            "language" => languages.extend(values),
                            "processed-by" | "sdk" => tools.extend(values),
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let has = |list: &[String], needle: &str| list.iter().any(|v| v.contains(needle));
    outside.toolchain = if has(&tools, "componentize-py") || has(&languages, "python") {
        Some(Toolchain::Python)
    } else if has(&tools, "componentize")
        || has(&tools, "starlingmonkey")
        || has(&languages, "javascript")
    {
        Some(Toolchain::JavaScript)
    } else if has(&languages, "rust") || has(&tools, "rustc") {
        Some(Toolchain::Rust)
    } else {
        None
    };
    Ok(outside)
}

/// The toolchain that built the component `bytes`, as its producers sections tell.
pub fn toolchain(bytes: &[u8]) -> Option<Toolchain> {
    read(bytes).ok()?.toolchain
}

/// How to build a component without `import` (`package/interface@version`), for the
/// toolchain that built it; `None` when there is nothing specific to say.
pub fn removal_hint(import: &str, toolchain: Option<Toolchain>) -> Option<String> {
    let interface = import.split('@').next().unwrap_or(import);
    let package = interface.split('/').next().unwrap_or(interface);
    match toolchain {
        Some(Toolchain::Python) => package.starts_with("wasi:").then(|| {
            "build with `componentize-py … componentize --stub-wasi` (or `switchyard plugin build`), \
             which leaves only the switchyard imports"
                .to_owned()
        }),
        Some(Toolchain::JavaScript) => {
            let flag = match package {
                "wasi:random" => "random",
                "wasi:http" => "http fetch-event",
                "wasi:clocks" if interface.ends_with("monotonic-clock") => "clocks",
                "wasi:clocks" => "clocks stdio",
                "wasi:filesystem" => "stdio",
                "wasi:sockets" => "http fetch-event",
                _ => return None,
            };
            Some(format!(
                "build with `componentize-js … -d stdio random clocks http fetch-event` \
                 (or `switchyard plugin build`); `-d {flag}` removes this one"
            ))
        }
        Some(Toolchain::Rust) | None => {
            let what = match package {
                "wasi:random" => {
                    "randomness: a std HashMap/HashSet (RandomState) or a crate such as rand; \
                     use BTreeMap or a fixed-seed hasher"
                }
                "wasi:sockets" => "networking (std::net or a networking crate)",
                "wasi:http" => "HTTP (a client crate)",
                "wasi:clocks" if interface.ends_with("monotonic-clock") => {
                    "std::time::Instant: use the host's `monotonic-now` (switchyard_plugin_sdk::monotonic_now)"
                }
                "wasi:clocks" => {
                    "std::time::SystemTime::now: use the event's `timestamp-ms`, or grant `allow_dirs`"
                }
                "wasi:filesystem" => "std::fs: grant directories with `allow_dirs`",
                _ => return None,
            };
            Some(format!("comes from {what}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_module_is_told_apart_from_a_component() {
        // `\0asm`, version 1: an empty core module.
        let module = b"\0asm\x01\0\0\0";
        assert!(matches!(read(module), Err(NotAComponent::CoreModule)));
        assert!(matches!(
            read(b"not wasm at all"),
            Err(NotAComponent::Unreadable)
        ));
    }

    #[test]
    fn hints_name_the_flag_of_each_toolchain() {
        let js = removal_hint("wasi:random/random@0.2.12", Some(Toolchain::JavaScript)).unwrap();
        assert!(js.contains("-d random"), "{js}");
        let py = removal_hint("wasi:sockets/tcp@0.2.0", Some(Toolchain::Python)).unwrap();
        assert!(py.contains("--stub-wasi"), "{py}");
        let rust = removal_hint("wasi:random/insecure-seed@0.2.6", Some(Toolchain::Rust)).unwrap();
        assert!(rust.contains("HashMap"), "{rust}");
        assert_eq!(
            removal_hint("acme:thing/x@1.0.0", Some(Toolchain::Rust)),
            None
        );
    }
}
