//! Checking uploaded component bytes before they are stored: valid, a
//! component (not a core module), and of the kind the spec declares.

use shoal_api::ComponentKind;
use wasmparser::{Parser, Payload, Validator, WasmFeatures};

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    /// The kind its exports say it is, if any.
    pub kind: Option<ComponentKind>,
    /// Whether it exports `shoal:workload/health`.
    pub health: bool,
    /// Its size, for the namespace's component-bytes quota.
    pub bytes: u64,
}

/// Validates `bytes` as a component and reads its top-level exports.
pub fn inspect(bytes: &[u8]) -> Result<Inspected, String> {
    if !bytes.starts_with(b"\0asm") {
        return Err("not a WebAssembly file (it does not start with \\0asm)".into());
    }
    if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Err(
            "a core WebAssembly module, not a component: build it for wasm32-wasip2".into(),
        );
    }
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(bytes)
        .map_err(|e| format!("not a valid component: {e}"))?;
    let mut depth = 0usize;
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a valid component: {e}"))? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| format!("not a valid component: {e}"))?;
                    names.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(Inspected {
        kind: ComponentKind::from_exports(names.iter().map(String::as_str)),
        health: names.iter().any(|n| n == shoal_api::exports::HEALTH),
        bytes: bytes.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_component() {
        assert!(
            inspect(b"hello")
                .unwrap_err()
                .contains("not a WebAssembly file")
        );
        assert!(
            inspect(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(
            inspect(b"\0asm\x0d\0\x01\0\x07")
                .unwrap_err()
                .contains("not a valid component")
        );
    }
}
