//! The nginx.conf around a test's `server {}` body: the module loaded, the prefix's paths,
//! `{{PREFIX}}`/`{{BACKEND}}`/`{{MODULE}}` filled in.

use crate::locate::{module_path, nginx_version, running_as_root};
use std::net::SocketAddr;
use std::path::Path;

/// What goes around a server body.
#[derive(Debug, Clone)]
pub struct Skeleton {
    pub load_module: bool,
    pub worker_processes: u32,
    pub main_lines: Vec<String>,
    pub http_lines: Vec<String>,
    pub backend: Option<SocketAddr>,
    /// Serve HTTP/2 over cleartext (h2c) on the listening port.
    pub http2: bool,
}

impl Default for Skeleton {
    fn default() -> Self {
        Self {
            load_module: true,
            worker_processes: 1,
            main_lines: Vec::new(),
            http_lines: Vec::new(),
            backend: None,
            http2: false,
        }
    }
}

impl Skeleton {
    /// Replaces `{{PREFIX}}`, `{{BACKEND}}` and `{{MODULE}}` in `text`.
    pub fn substitute(&self, text: &str, prefix: &Path) -> String {
        let mut out = text.replace("{{PREFIX}}", &prefix.display().to_string());
        if out.contains("{{BACKEND}}") {
            let backend = self.backend.unwrap_or_else(|| {
                panic!("the configuration uses {{{{BACKEND}}}} but no backend is attached")
            });
            out = out.replace("{{BACKEND}}", &format!("127.0.0.1:{}", backend.port()));
        }
        if out.contains("{{MODULE}}") {
            out = out.replace("{{MODULE}}", &module_path().display().to_string());
        }
        out
    }

    /// The whole nginx.conf for a server listening on `port` with `server_body`.
    pub fn render(&self, prefix: &Path, port: u16, server_body: &str) -> String {
        let p = prefix.display();
        let mut conf = String::new();
        if self.load_module {
            conf.push_str(&format!("load_module {};\n", module_path().display()));
        }
        conf.push_str(&format!(
            "daemon off;\n\
             master_process on;\n\
             worker_processes {};\n\
             pid {p}/nginx.pid;\n\
             error_log {p}/error.log info;\n",
            self.worker_processes
        ));
        if running_as_root() {
            conf.push_str("user root;\n");
        }
        for line in &self.main_lines {
            conf.push_str(&self.substitute(line, prefix));
            conf.push('\n');
        }
        conf.push_str("events { worker_connections 1024; }\n");
        conf.push_str(&format!(
            "http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {p}/client_body;\n\
             \x20   proxy_temp_path {p}/proxy;\n\
             \x20   fastcgi_temp_path {p}/fastcgi;\n\
             \x20   uwsgi_temp_path {p}/uwsgi;\n\
             \x20   scgi_temp_path {p}/scgi;\n"
        ));
        for line in &self.http_lines {
            conf.push_str("    ");
            conf.push_str(&self.substitute(line, prefix));
            conf.push('\n');
        }
        if !self.http2 {
            conf.push_str(&format!(
                "    server {{\n        listen 127.0.0.1:{port};\n"
            ));
        } else if nginx_version() >= (1, 25, 1) {
            conf.push_str(&format!(
                "    server {{\n        listen 127.0.0.1:{port};\n        http2 on;\n"
            ));
        } else {
            // Before 1.25.1 HTTP/2 is a parameter of `listen`.
            conf.push_str(&format!(
                "    server {{\n        listen 127.0.0.1:{port} http2;\n"
            ));
        }
        for line in self.substitute(server_body, prefix).lines() {
            conf.push_str("        ");
            conf.push_str(line);
            conf.push('\n');
        }
        conf.push_str("    }\n}\n");
        conf
    }
}
