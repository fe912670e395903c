//! The per-connection decision of the transparent outbound path, without I/O: given the
//! original destination and the mesh index, go to a mesh service over mTLS, pass through, or
//! refuse.

use std::net::SocketAddr;
use std::sync::Arc;

use super::catalog::MeshIndex;

/// What to do with a redirected connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The destination is an instance (or virtual address) of this mesh service.
    Mesh { service: Arc<str> },
    /// Not a mesh destination: plain TCP to it, from a socket that is not redirected.
    PassThrough,
    /// Not a mesh destination and `--mesh-destinations-only`.
    Refuse,
}

/// Decides the route of a connection to `orig`.
pub fn decide(orig: SocketAddr, index: &MeshIndex, mesh_destinations_only: bool) -> Route {
    match index.service_at(orig) {
        Some(service) => Route::Mesh { service },
        None if mesh_destinations_only => Route::Refuse,
        None => Route::PassThrough,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transparent::catalog::CatalogEntry;

    #[test]
    fn mesh_pass_through_and_refusal() {
        let index = MeshIndex::from_entries(&[
            CatalogEntry::service("db", "10.0.0.5", 5432),
            CatalogEntry::sidecar("db-proxy", "10.0.0.5", 21000, "db"),
        ]);
        let db: SocketAddr = "10.0.0.5:5432".parse().unwrap();
        let other: SocketAddr = "10.0.0.9:80".parse().unwrap();
        assert_eq!(
            decide(db, &index, false),
            Route::Mesh {
                service: "db".into()
            }
        );
        assert_eq!(decide(other, &index, false), Route::PassThrough);
        assert_eq!(decide(other, &index, true), Route::Refuse);
    }
}
