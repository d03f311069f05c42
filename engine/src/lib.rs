//! The upload engine of ngx-upload: everything about an upload that needs no nginx.
//!
//! Header parsers ([`content_range`], [`disposition`], [`session_id`]), the set of received
//! ranges ([`range_set`]), the on-disk session ([`session`], [`state`], [`store`]), the
//! hand-off body ([`form`]) and the file hashes ([`hashing`], [`hash_state`]). Uploads addressed
//! by id, created explicitly, for the protocols that need that ([`upload`]), and assembled from
//! several ([`assemble`]). The nginx module calls into this crate; nothing here calls nginx.

pub mod assemble;
pub mod base64;
pub mod blocks;
pub mod content_range;
mod disk;
pub mod disposition;
pub mod form;
pub mod hash_state;
pub mod hashing;
pub mod idle_files;
pub mod multipart;
pub mod range_set;
pub mod session;
pub mod session_id;
pub mod state;
mod state_cache;
pub mod store;
pub mod upload;
