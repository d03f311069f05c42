//! The usual upload location and its echo backend: [`UploadEnv`], what most tests start.

use crate::data::{assert_bytes_eq, snapshot};
use crate::errorlog::tail;
use crate::http::{build_request, send_raw, Response, IO_TIMEOUT};
use crate::nginx::{Nginx, NginxBuilder};
use crate::procfs::ofd_locks;
use crate::segment::{post_segment, Segment};
use crate::wait::{try_wait_for, wait_for, WAIT_TIMEOUT};
use ngx_upload_backend::{self as backend, Backend, Field, ReceivedRequest};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};

/// The server body most tests use; `{{EXTRA}}` takes more lines for `location /upload`.
pub const UPLOAD_SERVER: &str = r#"
location /upload {
    upload_pass @backend;
    upload_resumable on;
    upload_store {{PREFIX}}/store 1;
    upload_state_store {{PREFIX}}/state 1;
    upload_store_access user:rw group:r;
    upload_set_form_field $upload_field_name.name "$upload_file_name";
    upload_set_form_field $upload_field_name.path "$upload_tmp_path";
    upload_set_form_field "$upload_field_name.content_type" "$upload_content_type";
    upload_aggregate_form_field "$upload_field_name.size" "$upload_file_size";
    upload_aggregate_form_field "$upload_field_name.number" "$upload_file_number";
    upload_aggregate_form_field "range" "$upload_content_range";
    {{EXTRA}}
}
location @backend { proxy_pass http://{{BACKEND}}; }
"#;

/// [`UPLOAD_SERVER`] with `extra` lines in `location /upload`.
pub fn upload_server(extra: &str) -> String {
    UPLOAD_SERVER.replace("{{EXTRA}}", extra)
}

/// nginx with an upload location, and the echo backend it hands files to.
pub struct UploadEnv {
    // Declared first, so nginx stops before the backend goes away.
    pub nginx: Nginx,
    pub backend: Backend,
}

impl UploadEnv {
    /// nginx with `server_body` (which may use `{{BACKEND}}`) and a fresh backend.
    pub fn start_server(builder: NginxBuilder, server_body: &str) -> Self {
        let backend = backend::spawn("127.0.0.1:0");
        let nginx = builder.backend(&backend).start(server_body);
        UploadEnv { nginx, backend }
    }

    /// The usual server, with `extra` lines in `location /upload`.
    pub fn start(extra: &str) -> Self {
        Self::start_server(Nginx::builder(), &upload_server(extra))
    }

    pub fn port(&self) -> u16 {
        self.nginx.port()
    }

    /// Asserts that an answer with `status` and body `text` is the backend's 200 to the one
    /// hand-off it received (it echoes what it got), and returns that hand-off's form fields.
    #[track_caller]
    pub fn single_handoff(
        &self,
        status: u16,
        text: &str,
        shown: &dyn std::fmt::Display,
    ) -> Vec<backend::Field> {
        assert_eq!(status, 200, "{shown}\n{}", self.nginx.error_log());
        let requests = self.backend.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(text, backend::echo_body(&requests[0]));
        requests[0].fields().unwrap()
    }

    /// Sends `request`, asserts the answer has `status` (showing the request and what error.log
    /// gained if not) and that error.log gained a line with one of `needles`.
    #[track_caller]
    pub fn expect_status(&self, request: &[u8], status: u16, needles: &[&str]) -> Response {
        let offset = self.nginx.log_len();
        let r = send_raw(self.port(), request);
        assert_eq!(
            r.status,
            status,
            "request:\n{}\nresponse:\n{r}\nerror.log gained:\n{}",
            String::from_utf8_lossy(&request[..request.len().min(600)]),
            self.nginx.log_since(offset)
        );
        self.nginx.assert_logged(offset, needles);
        r
    }

    /// POSTs `segment` to `/upload`.
    pub fn post(&self, segment: &Segment<'_>) -> Response {
        post_segment(self.port(), "/upload", segment)
    }

    /// Asks what session `id` holds (a `POST` with the session id and no body): the status
    /// and the `Range` report.
    pub fn status_query(&self, id: &str) -> (u16, String) {
        let headers = [("X-Session-ID", id), ("Content-Length", "0")];
        let r = send_raw(
            self.port(),
            &build_request("POST", "/upload", &headers, None),
        );
        (r.status, r.header("Range").unwrap_or_default().to_string())
    }

    /// The `Range` report of a session that exists (empty if it holds nothing yet).
    #[track_caller]
    pub fn report(&self, id: &str) -> String {
        let (status, report) = self.status_query(id);
        assert_eq!(
            status,
            200,
            "status query for {id}:\n{}",
            self.nginx.error_log()
        );
        report
    }

    /// Polls the status query until session `id` exists (`200`; `404` until a request for it,
    /// maybe in another worker, has started it) with a report that `done` accepts, for up to
    /// [`WAIT_TIMEOUT`]; returns that report. Past the deadline it panics with the last answer.
    #[track_caller]
    pub fn wait_report(&self, id: &str, done: impl Fn(&str) -> bool) -> String {
        let waited = try_wait_for(WAIT_TIMEOUT, || match self.status_query(id) {
            (200, report) if done(&report) => Ok(report),
            (status, report) => Err(format!("status {status}, Range {report:?}")),
        });
        waited.unwrap_or_else(|last| {
            panic!(
                "waited {WAIT_TIMEOUT:?} for session {id} to exist with the report awaited, in \
                 vain; the last status query answered {last}\n--- end of error.log ---\n{}",
                tail(&self.nginx.error_log(), 40)
            )
        })
    }

    /// Waits until session `id` exists and a request holds its claim on bytes `first..=last`
    /// of the output file (the open-file-description lock a request writing them takes, in
    /// `/proc/locks`), so a segment overlapping them is refused; returns the session's report.
    /// The state file is written before that lock is taken: a report alone is not enough.
    #[track_caller]
    pub fn wait_in_flight(&self, id: &str, first: u64, last: u64) -> String {
        let report = self.wait_report(id, |_| true);
        let path = self.stored_path(id);
        wait_for(
            &format!("a request to claim bytes {first}-{last} of session {id}"),
            WAIT_TIMEOUT,
            || {
                let locks = ofd_locks(&path);
                let covered = locks
                    .iter()
                    .any(|&(a, b)| a <= first && b.is_none_or(|b| b >= last));
                if covered {
                    Ok(())
                } else {
                    Err(format!("locks on {}: {locks:?}", path.display()))
                }
            },
        );
        report
    }

    /// Sends the head of `segment` and the first `sent` bytes of its body, leaving the request
    /// open; the caller sends the rest (or drops the connection).
    pub fn start_segment(&self, segment: &Segment<'_>, sent: usize) -> TcpStream {
        let request = segment.to_request("/upload");
        let head_len = request.len() - segment.body.len();
        let mut conn = TcpStream::connect(("127.0.0.1", self.port())).unwrap();
        conn.set_nodelay(true).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        conn.write_all(&request[..head_len + sent]).unwrap();
        conn
    }

    /// Where the usual config (`upload_store {{PREFIX}}/store 1`) keeps session `id`.
    pub fn stored_path(&self, id: &str) -> PathBuf {
        let last = &id[id.len() - 1..];
        self.nginx.path("store").join(last).join(id)
    }

    /// Every file under the data and state stores.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut all = snapshot(&self.nginx.path("store"));
        all.extend(snapshot(&self.nginx.path("state")));
        all
    }

    /// Asserts that `response` is the backend's answer to the one hand-off it received, which
    /// names, in the usual fields of `field`, the file `filename` holding `data` at `path`.
    #[track_caller]
    pub fn assert_handed_off(
        &self,
        response: &Response,
        field: &str,
        filename: &str,
        path: Option<&Path>,
        data: &[u8],
    ) -> ReceivedRequest {
        assert_eq!(
            response.status, 200,
            "expected the backend's answer, got:\n{response}"
        );
        let requests = self.backend.requests();
        assert_eq!(
            requests.len(),
            1,
            "the backend should have received exactly one hand-off, got {requests:#?}"
        );
        let req = requests.into_iter().next().unwrap();
        assert_eq!(req.method, "POST");
        let content_type = req.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("multipart/form-data"),
            "hand-off Content-Type {content_type:?}"
        );
        assert_eq!(
            response.text(),
            backend::echo_body(&req),
            "the client's answer is not the backend's"
        );
        let fields = req
            .fields()
            .unwrap_or_else(|e| panic!("hand-off body is not a valid form ({e}): {req:?}"));
        let get = |name: &str| -> String {
            fields
                .iter()
                .find(|f| f.name == name)
                .map(Field::value_str)
                .unwrap_or_else(|| panic!("hand-off has no field {name:?}: {fields:#?}"))
        };
        assert_eq!(get(&format!("{field}.name")), filename);
        assert_eq!(get(&format!("{field}.content_type")), "text/plain");
        assert_eq!(get(&format!("{field}.size")), data.len().to_string());
        let number = get(&format!("{field}.number"));
        assert!(
            !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()),
            "{field}.number = {number:?}"
        );
        let range = get("range");
        assert!(
            range.ends_with(&format!("/{}", data.len())),
            "range = {range:?} does not name the total size {}",
            data.len()
        );
        let stored = PathBuf::from(get(&format!("{field}.path")));
        if let Some(path) = path {
            assert_eq!(stored, path, "{field}.path");
        }
        let content = fs::read(&stored).unwrap_or_else(|e| {
            panic!("cannot read the handed-off file {}: {e}", stored.display())
        });
        assert_bytes_eq(&content, data, "the handed-off file");
        req
    }
}
