//! Build script: records the target triple, shown by `mphang --version`.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown target".into());
    println!("cargo:rustc-env=MPHANG_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
