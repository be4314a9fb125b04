//! Without rustup's wasm32-wasip2 target, the standard library is built from
//! source and the C start-up object that defines `_start` must be linked by
//! hand, for binaries only. `scripts/build-examples` sets
//! `SHOAL_WASI_CRT1` when it is needed.

fn main() {
    println!("cargo:rerun-if-env-changed=SHOAL_WASI_CRT1");
    if let Ok(crt1) = std::env::var("SHOAL_WASI_CRT1") {
        println!("cargo:rustc-link-arg-bins={crt1}");
    }
}
