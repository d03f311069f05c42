//! The test support of ngx-upload: real nginx processes with the module loaded, a plain
//! HTTP/1.1 client over `TcpStream`, test data and the store on disk, and the helpers of
//! particular tests. The integration tests of the root package (`tests/*.rs`) use it as a
//! dev-dependency, `ngx-upload-bench` for its nginx processes.
//!
//! The core harness is re-exported at the root (`use ngx_upload_test_support::*`):
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`locate`] | which nginx binary and module run (`NGX_UPLOAD_NGINX`, `NGX_UPLOAD_MODULE`, else the vendored build), `nginx -v`, the repository's root |
//! | [`prefix`] | fresh prefix directories, free ports |
//! | [`skeleton`] | the nginx.conf around a test's `server {}` body (templating) |
//! | [`process`] | running an nginx master: command line, ready (listening, workers forked), QUIT, kill |
//! | [`errorlog`] | error.log filters (serious lines, levels), its end |
//! | [`nginx`] | the tests' [`Nginx`] and its builder, `nginx -t` |
//! | [`procfs`] | what `/proc` and sock_diag say: children, sockets, unread bytes, file locks, tracers, CPU and memory |
//! | [`wait`] | waiting for a state instead of sleeping |
//! | [`http`] | the HTTP/1.1 client |
//! | [`segment`] | requests of the resumable protocol, their `Range` reports |
//! | [`upload`] | the usual upload location and its echo backend ([`UploadEnv`]) |
//! | [`data`] | deterministic test data, snapshots of the store, byte comparisons |
//! | [`forms`] | browser forms: the location, a multipart builder, the hand-off check |
//! | [`digests`] | reference digests (coreutils) |
//!
//! Used by path (`ngx_upload_test_support::fastcgi::FastCgi`, …):
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`conf_file`] | nginx on a whole `nginx-conf/*.conf` file, its placeholders, a test certificate |
//! | [`curl`] | `curl --http2-prior-knowledge`, the HTTP/2 client |
//! | [`crash`] | an nginx killed whole and restarted on its prefix |
//! | [`fastcgi`] | a FastCGI responder (the role of PHP-FPM) |
//! | [`h2`] | a minimal h2c client for one upload: whole windows per `writev` or paced frames, the largest stream window nginx gave |
//! | [`flaky`] | a TCP relay that spoils one connection |
//! | [`pyclient`] | running the Python client |
//! | [`tus`] | tus and IETF-draft requests, their answers, and the real tus clients (tus-js-client, tuspy) |

pub mod conf_file;
pub mod crash;
pub mod curl;
pub mod data;
pub mod digests;
pub mod errorlog;
pub mod fastcgi;
pub mod flaky;
pub mod forms;
pub mod h2;
pub mod http;
pub mod locate;
pub mod nginx;
pub mod prefix;
pub mod process;
pub mod procfs;
pub mod pyclient;
pub mod segment;
pub mod skeleton;
pub mod tus;
pub mod upload;
pub mod wait;

pub use data::*;
pub use digests::*;
pub use errorlog::*;
pub use forms::*;
pub use http::*;
pub use locate::*;
pub use nginx::*;
pub use ngx_upload_backend::{self as backend, Backend, Field, ReceivedRequest};
pub use prefix::*;
pub use process::*;
pub use procfs::*;
pub use segment::*;
pub use skeleton::*;
pub use upload::*;
pub use wait::*;
