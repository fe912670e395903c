//! The data-plane chain harness shared by the `proxy_chain` and `l7_chain` binaries: load
//! generation and verification (`load`), starting `meshd dev` and meshproxy sidecars (`mesh`),
//! the OpenSSL peers stunnel and HAProxy (`peers`) and process helpers (`procs`). A library
//! module, so each binary links one copy instead of compiling the files into itself.

pub mod load;
pub mod mesh;
pub mod peers;
pub mod procs;
