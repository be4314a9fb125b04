//! Procedural macros behind `shoal-sdk`'s `export_worker!` and `export_health!`.
//!
//! Why a procedural macro: the bindings for an *exported* interface, and the
//! custom section that tells the component linker about the export, must be
//! generated in the workload's own crate. Generated in the SDK, they would be
//! linked into every workload and demand exports the workload does not have.
//! `wit_bindgen::generate!` resolves a relative `path` against the crate that
//! calls it, so this macro hands it the absolute path of the repository's one
//! `wit/` directory, known when this crate is compiled.

use proc_macro::TokenStream;
use quote::quote;

/// The one copy of Shoal's WIT, next to the SDK.
const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit");

/// Generates bindings for one `shoal:workload` world that exports an
/// interface, reusing the SDK's bindings for everything the world imports.
///
/// Input: the world's name (`worker` or `health-check`). Expands to the
/// generated module contents, including an `export!` macro.
#[proc_macro]
pub fn export_bindings(input: TokenStream) -> TokenStream {
    let world: String = input
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '"')
        .collect();
    let world = format!("shoal:workload/{world}");
    let wit_dir = WIT_DIR;
    let with = match world.as_str() {
        "shoal:workload/worker" => quote! {
            with: {
                "shoal:workload/types@0.1.0": ::shoal_sdk::bindings::shoal::workload::types,
                "shoal:workload/secrets@0.1.0": ::shoal_sdk::bindings::shoal::workload::secrets,
                "shoal:workload/config@0.1.0": ::shoal_sdk::bindings::shoal::workload::config,
                "shoal:workload/messaging@0.1.0": ::shoal_sdk::bindings::shoal::workload::messaging,
                "shoal:workload/keyvalue@0.1.0": ::shoal_sdk::bindings::shoal::workload::keyvalue,
            },
        },
        _ => quote! {},
    };
    quote! {
        ::shoal_sdk::__wit_bindgen::generate!({
            path: #wit_dir,
            world: #world,
            runtime_path: "::shoal_sdk::__wit_bindgen::rt",
            #with
        });
    }
    .into()
}
