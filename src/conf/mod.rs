//! Directives: the location configuration, its parsing and its merging.
//!
//! Names, arguments, contexts and defaults are those of nginx-upload-module, so its configs load
//! unchanged. Where nginx has a stock slot parser for a directive's syntax it is used, so values
//! are checked and reported exactly as nginx does for its own directives.

use core::ffi::{c_char, c_void};
use core::mem::offset_of;
use core::ptr;

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_array_create, ngx_array_push, ngx_array_t, ngx_command_t, ngx_conf_merge_path_value,
    ngx_conf_set_access_slot, ngx_conf_set_flag_slot, ngx_conf_set_num_slot, ngx_conf_set_off_slot,
    ngx_conf_set_path_slot, ngx_conf_set_sec_slot, ngx_conf_set_size_slot, ngx_conf_t, ngx_flag_t,
    ngx_http_compile_complex_value, ngx_http_compile_complex_value_t, ngx_http_complex_value_t,
    ngx_int_t, ngx_path_init_t, ngx_path_t, ngx_regex_compile, ngx_regex_compile_t,
    ngx_regex_elt_t, ngx_regex_exec_array, ngx_str_t, ngx_thread_pool_t, ngx_uint_t, off_t, time_t,
    NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_TAKE1, NGX_CONF_TAKE123, NGX_CONF_TAKE1234,
    NGX_CONF_TAKE2, NGX_HTTP_LIF_CONF, NGX_HTTP_LMT_CONF, NGX_HTTP_LOC_CONF,
    NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_PROXY_TEMP_PATH, NGX_HTTP_SRV_CONF,
    NGX_LOG_EMERG, NGX_OK,
};
use ngx::http::{Merge, MergeConfigError};
use ngx::{ngx_conf_log_error, ngx_string};

use crate::Module;
use ngx::http::HttpModuleMainConf;
use ngx_upload_engine::hashing::{Algorithm, Algorithms, Case};
use ngx_upload_engine::session::{SessionStore, DEFAULT_MAX_RANGES};
use ngx_upload_engine::store::HashedDir;
use std::time::Duration;

pub mod protocol;
mod tus;

const UNSET_FLAG: ngx_flag_t = -1;
const UNSET_SIZE: usize = usize::MAX;
const UNSET_UINT: ngx_uint_t = ngx_uint_t::MAX;
const UNSET_OFF: off_t = -1;
const UNSET_TIME: time_t = -1;
const UNSET_INT: ngx_int_t = -1;

/// A string that may hold variables, compiled once at configuration time into the
/// configuration pool.
#[derive(Clone, Copy)]
pub struct Compiled(core::ptr::NonNull<ngx_http_complex_value_t>);

impl Compiled {
    pub fn get(self) -> &'static ngx_http_complex_value_t {
        // SAFETY: made only by `compile`, from the configuration pool, which outlives every
        // request served with this configuration; nginx only reads it once compiled.
        unsafe { self.0.as_ref() }
    }
}

/// A `name value` pair whose parts may hold variables.
#[derive(Clone, Copy)]
pub struct Template {
    pub name: Compiled,
    pub value: Compiled,
}

/// Inclusive range of response statuses for `upload_cleanup`.
pub type StatusRange = (u16, u16);

/// Per-location configuration. Fields filled by nginx's stock slot parsers keep nginx's types
/// and start at nginx's "unset" values; lists are `None` until a directive in this block sets
/// them, and a block's list replaces its parent's rather than extending it.
pub struct UploadConf {
    /// `upload_pass`: a location URI or `@name`, may hold variables; setting it makes this
    /// location's content handler the upload handler.
    pub pass: Option<Compiled>,
    pub resumable: ngx_flag_t,
    pub store: *mut ngx_path_t,
    pub state_store: *mut ngx_path_t,
    pub store_access: ngx_uint_t,
    pub buffer_size: usize,
    pub max_file_size: off_t,
    pub pass_args: ngx_flag_t,
    pub tame_arrays: ngx_flag_t,
    pub set_fields: Option<Vec<Template>>,
    pub aggregate_fields: Option<Vec<Template>>,
    pub add_headers: Option<Vec<Template>>,
    pub cleanup: Option<Vec<StatusRange>>,
    /// `upload_pass_form_field`: an array of `ngx_regex_elt_t` for `ngx_regex_exec_array`.
    pub pass_fields: *mut ngx_array_t,
    pub max_part_header_len: usize,
    pub max_output_body_len: usize,
    pub empty_field_names: ngx_flag_t,
    /// Accepted for compatibility; see README.
    pub limit_rate: usize,
    pub merge_buffer_size: usize,
    pub range_header_buffer_size: usize,
    /// Hashes the field templates use, found when they are parsed.
    pub hashes: Option<Algorithms>,
    /// `upload_protocol`: one of [`protocol::PROTOCOL_NAMES`].
    pub protocol: ngx_uint_t,
    /// `upload_state_fsync`: data and state are on disk before a positive answer.
    pub state_fsync: ngx_flag_t,
    /// `upload_state_expire`: seconds after which an untouched session is removed; 0 never.
    pub state_expire: time_t,
    /// `upload_state_max_ranges`: most disjoint ranges a session may hold.
    pub state_max_ranges: ngx_int_t,
    /// Where blocking disk work runs: nginx's "default" thread pool, for `upload_pass`
    /// locations; NULL runs it on the event loop (nginx built without threads).
    pub thread_pool: *mut ngx_thread_pool_t,
    /// `upload_store`, `upload_state_store` and `upload_store_access` as the engine takes them,
    /// resolved once when the configuration is merged.
    sessions: Option<SessionStore>,
    /// `upload_cors_origin`: the origin browsers may upload from (tus/IETF locations).
    pub cors_origin: ngx_str_t,
    /// A tus/IETF location's settings, derived when it is merged.
    pub tus_settings: Option<ngx_upload_protocol::resumable::Settings>,
    uploads: Option<ngx_upload_engine::upload::UploadStore>,
}

impl Default for UploadConf {
    fn default() -> Self {
        Self {
            pass: None,
            resumable: UNSET_FLAG,
            store: ptr::null_mut(),
            state_store: ptr::null_mut(),
            store_access: UNSET_UINT,
            buffer_size: UNSET_SIZE,
            max_file_size: UNSET_OFF,
            pass_args: UNSET_FLAG,
            tame_arrays: UNSET_FLAG,
            set_fields: None,
            aggregate_fields: None,
            add_headers: None,
            cleanup: None,
            pass_fields: ptr::null_mut(),
            max_part_header_len: UNSET_SIZE,
            max_output_body_len: UNSET_SIZE,
            empty_field_names: UNSET_FLAG,
            limit_rate: UNSET_SIZE,
            merge_buffer_size: UNSET_SIZE,
            range_header_buffer_size: UNSET_SIZE,
            hashes: None,
            protocol: UNSET_UINT,
            state_fsync: UNSET_FLAG,
            state_expire: UNSET_TIME,
            state_max_ranges: UNSET_INT,
            thread_pool: ptr::null_mut(),
            sessions: None,
            cors_origin: tus::UNSET_ORIGIN,
            tus_settings: None,
            uploads: None,
        }
    }
}

fn merge_value<T: Copy + PartialEq>(this: &mut T, prev: T, unset: T, default: T) {
    if *this == unset {
        *this = if prev == unset { default } else { prev };
    }
}

fn merge_list<T: Clone>(this: &mut Option<Vec<T>>, prev: &Option<Vec<T>>) {
    if this.is_none() {
        this.clone_from(prev);
    }
}

impl Merge for UploadConf {
    /// Everything but the storage paths, whose defaults need the configuration context; see
    /// [`merge_loc_conf`].
    fn merge(&mut self, prev: &Self) -> Result<(), MergeConfigError> {
        // upload_pass is not inherited: it installs the content handler of its own block only.
        merge_value(&mut self.resumable, prev.resumable, UNSET_FLAG, 0);
        merge_value(&mut self.store_access, prev.store_access, UNSET_UINT, 0o600);
        merge_value(
            &mut self.buffer_size,
            prev.buffer_size,
            UNSET_SIZE,
            page_size(),
        );
        merge_value(&mut self.max_file_size, prev.max_file_size, UNSET_OFF, 0);
        merge_value(&mut self.pass_args, prev.pass_args, UNSET_FLAG, 0);
        merge_value(&mut self.tame_arrays, prev.tame_arrays, UNSET_FLAG, 0);
        merge_list(&mut self.set_fields, &prev.set_fields);
        merge_list(&mut self.aggregate_fields, &prev.aggregate_fields);
        merge_list(&mut self.add_headers, &prev.add_headers);
        merge_list(&mut self.cleanup, &prev.cleanup);
        if self.pass_fields.is_null() {
            self.pass_fields = prev.pass_fields;
        }
        merge_value(
            &mut self.max_part_header_len,
            prev.max_part_header_len,
            UNSET_SIZE,
            512,
        );
        merge_value(
            &mut self.max_output_body_len,
            prev.max_output_body_len,
            UNSET_SIZE,
            100 * 1024,
        );
        merge_value(
            &mut self.empty_field_names,
            prev.empty_field_names,
            UNSET_FLAG,
            0,
        );
        merge_value(&mut self.limit_rate, prev.limit_rate, UNSET_SIZE, 0);
        merge_value(
            &mut self.merge_buffer_size,
            prev.merge_buffer_size,
            UNSET_SIZE,
            page_size() / 2,
        );
        merge_value(
            &mut self.range_header_buffer_size,
            prev.range_header_buffer_size,
            UNSET_SIZE,
            256,
        );
        if self.cors_origin.data.is_null() {
            self.cors_origin = prev.cors_origin;
        }
        merge_value(
            &mut self.protocol,
            prev.protocol,
            UNSET_UINT,
            protocol::NGINX_UPLOAD,
        );
        merge_value(&mut self.state_fsync, prev.state_fsync, UNSET_FLAG, 0);
        merge_value(&mut self.state_expire, prev.state_expire, UNSET_TIME, 0);
        merge_value(
            &mut self.state_max_ranges,
            prev.state_max_ranges,
            UNSET_INT,
            DEFAULT_MAX_RANGES as ngx_int_t,
        );
        if self.set_fields.is_some() || self.aggregate_fields.is_some() {
            // The hashes follow the templates that use them.
        } else if self.hashes.is_none() {
            self.hashes = prev.hashes;
        }
        Ok(())
    }
}

/// Where files go when no `upload_store` / `upload_state_store` is configured: nginx's proxy
/// temporary directory with levels `1 2`, as in nginx-upload-module.
static mut DEFAULT_STORE: ngx_path_init_t = ngx_path_init_t {
    name: ngx_str_t {
        len: NGX_HTTP_PROXY_TEMP_PATH.count_bytes(),
        data: NGX_HTTP_PROXY_TEMP_PATH.as_ptr() as *mut u8,
    },
    level: [1, 2, 0],
};

/// The `merge_loc_conf` callback.
///
/// # Safety
/// Called by nginx with this module's location configurations.
pub unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes two configurations created by this module's create_loc_conf.
    let (prev, conf) = unsafe { (&*prev.cast::<UploadConf>(), &mut *conf.cast::<UploadConf>()) };
    if conf.merge(prev).is_err() {
        return NGX_CONF_ERROR;
    }
    if conf.state_max_ranges < 1 {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "upload_state_max_ranges must be at least 1"
        );
        return NGX_CONF_ERROR;
    }
    for (this, prev) in [
        (&mut conf.store, prev.store),
        (&mut conf.state_store, prev.state_store),
    ] {
        // SAFETY: DEFAULT_STORE is only read here, during single-threaded configuration.
        let default = unsafe { &mut *ptr::addr_of_mut!(DEFAULT_STORE) };
        // SAFETY: the path fields are NULL or paths from ngx_conf_set_path_slot.
        if unsafe { ngx_conf_merge_path_value(cf, this, prev, default) } != NGX_CONF_OK {
            return NGX_CONF_ERROR;
        }
    }
    let mut sessions = SessionStore::new(
        hashed_dir(conf.store),
        hashed_dir(conf.state_store),
        conf.file_mode(),
    );
    sessions.durable = conf.state_fsync == 1;
    sessions.max_ranges = conf.state_max_ranges as usize;
    sessions.expire_after =
        (conf.state_expire > 0).then(|| Duration::from_secs(conf.state_expire as u64));
    if conf.pass.is_some() {
        // SAFETY: cf is the configuration being merged; this module's main configuration
        // exists (create_main_conf).
        if let Some(main) = Module::main_conf_mut(unsafe { &*cf }) {
            if main.thread_pool.is_null() {
                main.thread_pool = conf.thread_pool;
            }
            if sessions.expire_after.is_some() {
                main.watch_expiry(&sessions);
            }
        }
    }
    conf.uploads = Some(ngx_upload_engine::upload::UploadStore::new(
        sessions.clone(),
    ));
    conf.sessions = Some(sessions);
    if conf.protocol == protocol::TUS {
        conf.tus_settings = Some(conf.resumable_settings(cf));
    }
    NGX_CONF_OK
}

/// What the module keeps for the whole `http` block: the session stores whose sessions expire,
/// swept by one worker (see `expiry.rs`).
pub struct MainConf {
    pub expiring: Vec<SessionStore>,
    /// The thread pool of the first `upload_pass` location: the expiry sweep and the closing
    /// of idle kept files run there (`worker.rs`).
    pub thread_pool: *mut ngx_thread_pool_t,
}

impl Default for MainConf {
    fn default() -> Self {
        Self {
            expiring: Vec::new(),
            thread_pool: ptr::null_mut(),
        }
    }
}

impl MainConf {
    /// Adds a store to the sweep, once per state directory (locations may share one); the
    /// shortest expiry of those sharing a directory applies.
    fn watch_expiry(&mut self, sessions: &SessionStore) {
        match self
            .expiring
            .iter_mut()
            .find(|s| s.state.root == sessions.state.root)
        {
            Some(known) => known.expire_after = known.expire_after.min(sessions.expire_after),
            None => self.expiring.push(sessions.clone()),
        }
    }
}

impl UploadConf {
    pub fn resumable(&self) -> bool {
        self.resumable == 1
    }

    /// This location's uploads by id (tus, the IETF draft): the same stores as its sessions.
    pub fn uploads(&self) -> &ngx_upload_engine::upload::UploadStore {
        // merge_loc_conf sets it for every location before any request is served.
        self.uploads.as_ref().expect("merged configuration")
    }

    /// Where this location's files and sessions live.
    pub fn sessions(&self) -> &SessionStore {
        // merge_loc_conf sets it for every location before any request is served.
        self.sessions.as_ref().expect("merged configuration")
    }

    /// `upload_store_access` as a file mode.
    pub fn file_mode(&self) -> u32 {
        (self.store_access & 0o777) as u32
    }

    pub fn hash_algorithms(&self) -> Algorithms {
        self.hashes.unwrap_or(Algorithms::NONE)
    }

    /// Whether a form field is passed on to the backend (`upload_pass_form_field`).
    pub fn passes_field(&self, name: &[u8], log: *mut ngx::ffi::ngx_log_t) -> bool {
        if self.pass_fields.is_null() || name.is_empty() {
            return false;
        }
        let mut s = ngx_str_t {
            len: name.len(),
            data: name.as_ptr().cast_mut(),
        };
        // SAFETY: pass_fields is an array of compiled regexes from the configuration pool;
        // the subject is only read.
        unsafe { ngx_regex_exec_array(self.pass_fields, &mut s, log) == NGX_OK as isize }
    }

    pub fn cleans_up_on(&self, status: ngx_uint_t) -> bool {
        self.cleanup
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|&(lo, hi)| (lo as ngx_uint_t..=hi as ngx_uint_t).contains(&status))
    }
}

/// A merged path (never NULL: merging falls back to the default store) as the engine takes it.
fn hashed_dir(path: *mut ngx_path_t) -> HashedDir {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: merged paths were allocated by ngx_conf_set_path_slot or
    // ngx_conf_merge_path_value from the configuration pool, which outlives the configuration.
    let path = unsafe { &*path };
    HashedDir::new(
        std::ffi::OsStr::from_bytes(path.name.as_bytes()),
        &path.level,
    )
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Most directives are allowed wherever nginx-upload-module allows them: any level, including
/// `limit_except` and `if` blocks.
const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF
    | NGX_HTTP_SRV_CONF
    | NGX_HTTP_LOC_CONF
    | NGX_HTTP_LMT_CONF
    | NGX_HTTP_LIF_CONF;
/// A few are not allowed in `limit_except` and `if`.
const BLOCK_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

const fn command(
    name: ngx_str_t,
    args: u32,
    set: unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char,
    offset: usize,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: args as ngx_uint_t,
        set: Some(set),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset,
        post: ptr::null_mut(),
    }
}

pub static mut COMMANDS: [ngx_command_t; 26] = [
    command(
        ngx_string!("upload_pass"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_pass,
        0,
    ),
    ngx_command_t {
        post: &raw mut protocol::PROTOCOL_NAMES as *mut c_void,
        ..command(
            ngx_string!("upload_protocol"),
            BLOCK_LEVEL | NGX_CONF_TAKE1,
            ngx::ffi::ngx_conf_set_enum_slot,
            offset_of!(UploadConf, protocol),
        )
    },
    command(
        ngx_string!("upload_cors_origin"),
        BLOCK_LEVEL | NGX_CONF_TAKE1,
        ngx::ffi::ngx_conf_set_str_slot,
        offset_of!(UploadConf, cors_origin),
    ),
    command(
        ngx_string!("upload_resumable"),
        ANY_LEVEL | NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        offset_of!(UploadConf, resumable),
    ),
    command(
        ngx_string!("upload_store"),
        ANY_LEVEL | NGX_CONF_TAKE1234,
        set_path,
        offset_of!(UploadConf, store),
    ),
    command(
        ngx_string!("upload_state_store"),
        BLOCK_LEVEL | NGX_CONF_TAKE1234,
        set_path,
        offset_of!(UploadConf, state_store),
    ),
    command(
        ngx_string!("upload_store_access"),
        ANY_LEVEL | NGX_CONF_TAKE123,
        ngx_conf_set_access_slot,
        offset_of!(UploadConf, store_access),
    ),
    command(
        ngx_string!("upload_set_form_field"),
        ANY_LEVEL | NGX_CONF_TAKE2,
        set_template,
        offset_of!(UploadConf, set_fields),
    ),
    command(
        ngx_string!("upload_aggregate_form_field"),
        ANY_LEVEL | NGX_CONF_TAKE2,
        set_template,
        offset_of!(UploadConf, aggregate_fields),
    ),
    command(
        ngx_string!("upload_add_header"),
        ANY_LEVEL | NGX_CONF_TAKE2,
        set_template,
        offset_of!(UploadConf, add_headers),
    ),
    command(
        ngx_string!("upload_cleanup"),
        ANY_LEVEL | NGX_CONF_1MORE,
        set_cleanup,
        0,
    ),
    command(
        ngx_string!("upload_buffer_size"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        offset_of!(UploadConf, buffer_size),
    ),
    command(
        ngx_string!("upload_max_file_size"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        ngx_conf_set_off_slot,
        offset_of!(UploadConf, max_file_size),
    ),
    command(
        ngx_string!("upload_pass_args"),
        ANY_LEVEL | NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        offset_of!(UploadConf, pass_args),
    ),
    command(
        ngx_string!("upload_tame_arrays"),
        ANY_LEVEL | NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        offset_of!(UploadConf, tame_arrays),
    ),
    command(
        ngx_string!("upload_pass_form_field"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_pass_form_field,
        0,
    ),
    command(
        ngx_string!("upload_max_part_header_len"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        offset_of!(UploadConf, max_part_header_len),
    ),
    command(
        ngx_string!("upload_max_output_body_len"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        offset_of!(UploadConf, max_output_body_len),
    ),
    command(
        ngx_string!("upload_empty_fiels_names"),
        ANY_LEVEL | NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        offset_of!(UploadConf, empty_field_names),
    ),
    command(
        ngx_string!("upload_limit_rate"),
        NGX_HTTP_MAIN_CONF
            | NGX_HTTP_SRV_CONF
            | NGX_HTTP_LOC_CONF
            | NGX_HTTP_LIF_CONF
            | NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        offset_of!(UploadConf, limit_rate),
    ),
    command(
        ngx_string!("upload_merge_buffer_size"),
        BLOCK_LEVEL | NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        offset_of!(UploadConf, merge_buffer_size),
    ),
    command(
        ngx_string!("upload_range_header_buffer_size"),
        BLOCK_LEVEL | NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        offset_of!(UploadConf, range_header_buffer_size),
    ),
    command(
        ngx_string!("upload_state_fsync"),
        BLOCK_LEVEL | NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        offset_of!(UploadConf, state_fsync),
    ),
    command(
        ngx_string!("upload_state_expire"),
        BLOCK_LEVEL | NGX_CONF_TAKE1,
        ngx_conf_set_sec_slot,
        offset_of!(UploadConf, state_expire),
    ),
    command(
        ngx_string!("upload_state_max_ranges"),
        BLOCK_LEVEL | NGX_CONF_TAKE1,
        ngx_conf_set_num_slot,
        offset_of!(UploadConf, state_max_ranges),
    ),
    ngx_command_t::empty(),
];

/// The arguments of the directive being parsed, directive name first.
///
/// # Safety
/// `cf` must be the configuration being parsed, inside a directive handler.
unsafe fn args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: nginx fills cf->args with ngx_str_t values before calling a handler.
    unsafe { (*(*cf).args).as_slice() }
}

/// `upload_pass location;` (a URI or `@name`, variables allowed).
unsafe extern "C" fn set_pass(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration for NGX_HTTP_LOC_CONF_OFFSET.
    let conf = unsafe { &mut *conf.cast::<UploadConf>() };
    if conf.pass.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    // SAFETY: called by nginx while parsing this directive.
    let target = unsafe { args(cf) }[1];
    if target.is_empty() {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "upload_pass needs a location");
        return NGX_CONF_ERROR;
    }
    let Some(pass) = compile(cf, &target) else {
        return NGX_CONF_ERROR;
    };
    // The location's content handler is installed when it is merged (lib.rs), as this module
    // knows no handler.
    conf.pass = Some(pass);
    conf.thread_pool = default_thread_pool(cf);
    NGX_CONF_OK
}

/// nginx's "default" thread pool (created with nginx's defaults unless a `thread_pool default`
/// directive configures it), for the blocking disk work of uploads.
#[cfg(ngx_feature = "threads")]
fn default_thread_pool(cf: *mut ngx_conf_t) -> *mut ngx_thread_pool_t {
    // SAFETY: called while parsing the configuration, as `aio threads` does.
    unsafe { ngx::ffi::ngx_thread_pool_add(cf, ptr::null_mut()) }
}

#[cfg(not(ngx_feature = "threads"))]
fn default_thread_pool(_cf: *mut ngx_conf_t) -> *mut ngx_thread_pool_t {
    ptr::null_mut()
}

/// `upload_store` / `upload_state_store`: nginx's own path syntax (`path [level1 [level2
/// [level3]]]`), so nginx checks the levels and creates the directory at start.
unsafe extern "C" fn set_path(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: called by nginx while parsing this directive.
    if unsafe { args(cf) }[1].as_bytes().contains(&b'$') {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "variables in upload_store and upload_state_store are not supported"
        );
        return NGX_CONF_ERROR;
    }
    // SAFETY: same arguments nginx gave us; the offset names an `*mut ngx_path_t` field.
    unsafe { ngx_conf_set_path_slot(cf, cmd, conf) }
}

/// `upload_set_form_field`, `upload_aggregate_form_field`, `upload_add_header`: `name value`,
/// both of which may hold variables.
unsafe extern "C" fn set_template(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: the command's offset names an `Option<Vec<Template>>` field of UploadConf, which
    // nginx passes for NGX_HTTP_LOC_CONF_OFFSET.
    let list = unsafe {
        &mut *conf
            .cast::<u8>()
            .add((*cmd).offset)
            .cast::<Option<Vec<Template>>>()
    };
    // SAFETY: called by nginx while parsing this directive.
    let args = unsafe { args(cf) };
    let (Some(name), Some(value)) = (compile(cf, &args[1]), compile(cf, &args[2])) else {
        return NGX_CONF_ERROR;
    };
    list.get_or_insert_with(Vec::new)
        .push(Template { name, value });
    // SAFETY: nginx passes this module's location configuration.
    let conf = unsafe { &mut *conf.cast::<UploadConf>() };
    for arg in &args[1..] {
        for (alg, _) in hash_variables(arg.as_bytes()) {
            conf.hashes.get_or_insert(Algorithms::NONE).insert(alg);
        }
    }
    NGX_CONF_OK
}

/// The `$upload_file_<hash>` variables a template names (`$name` or `${name}`).
fn hash_variables(template: &[u8]) -> impl Iterator<Item = (Algorithm, Case)> + '_ {
    template.split(|b| *b == b'$').skip(1).filter_map(|rest| {
        let rest = rest.strip_prefix(b"{").unwrap_or(rest);
        let len = rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        Algorithm::from_variable(std::str::from_utf8(&rest[..len]).ok()?)
    })
}

/// `upload_pass_form_field regex;` (repeatable): ordinary form fields whose name matches are
/// passed to the backend; all others are dropped.
unsafe extern "C" fn set_pass_form_field(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration for NGX_HTTP_LOC_CONF_OFFSET.
    let conf = unsafe { &mut *conf.cast::<UploadConf>() };
    // SAFETY: cf is valid while parsing.
    let pool = unsafe { (*cf).pool };
    if conf.pass_fields.is_null() {
        // SAFETY: creating an array in the configuration pool.
        conf.pass_fields =
            unsafe { ngx_array_create(pool, 2, core::mem::size_of::<ngx_regex_elt_t>()) };
        if conf.pass_fields.is_null() {
            return NGX_CONF_ERROR;
        }
    }
    // SAFETY: called by nginx while parsing this directive.
    let pattern = unsafe { args(cf) }[1];
    let mut err = [0u8; 256];
    // SAFETY: zeroed is the documented initial state of ngx_regex_compile_t.
    let mut rc: ngx_regex_compile_t = unsafe { core::mem::zeroed() };
    rc.pattern = pattern;
    rc.pool = pool;
    rc.err = ngx_str_t {
        len: err.len(),
        data: err.as_mut_ptr(),
    };
    // SAFETY: rc is initialised as ngx_regex_compile expects.
    if unsafe { ngx_regex_compile(&mut rc) } != NGX_OK as isize {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "invalid regex \"{}\" in upload_pass_form_field: {}",
            pattern,
            String::from_utf8_lossy(&err[..rc.err.len.min(err.len())])
        );
        return NGX_CONF_ERROR;
    }
    // SAFETY: pushing onto an array of ngx_regex_elt_t created above.
    let elt = unsafe { ngx_array_push(conf.pass_fields) }.cast::<ngx_regex_elt_t>();
    if elt.is_null() {
        return NGX_CONF_ERROR;
    }
    // SAFETY: elt points to room for one element; the pattern lives in the configuration.
    unsafe {
        (*elt).regex = rc.regex;
        (*elt).name = pattern.data;
    }
    NGX_CONF_OK
}

/// Compiles a string that may hold variables into a complex value in the configuration pool.
fn compile(cf: *mut ngx_conf_t, source: &ngx_str_t) -> Option<Compiled> {
    // SAFETY: cf is valid during parsing; the pool outlives the configuration.
    let pool = unsafe { ngx::core::Pool::from_ngx_pool((*cf).pool) };
    let cv = pool.calloc_type::<ngx_http_complex_value_t>();
    let value = pool.calloc_type::<ngx_str_t>();
    if cv.is_null() || value.is_null() {
        return None;
    }
    // SAFETY: value points to pool memory sized for one ngx_str_t; the compiler keeps a
    // reference to it, so it must not live on the stack.
    unsafe { *value = *source };
    // SAFETY: a zeroed ngx_http_compile_complex_value_t is its documented initial state.
    let mut ccv: ngx_http_compile_complex_value_t = unsafe { core::mem::zeroed() };
    ccv.cf = cf;
    ccv.value = value;
    ccv.complex_value = cv;
    // SAFETY: ccv is fully initialised as nginx expects.
    if unsafe { ngx_http_compile_complex_value(&mut ccv) } != NGX_OK as isize {
        return None;
    }
    core::ptr::NonNull::new(cv).map(Compiled)
}

/// `upload_cleanup 400 404 499 500-505;`
unsafe extern "C" fn set_cleanup(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration for NGX_HTTP_LOC_CONF_OFFSET.
    let conf = unsafe { &mut *conf.cast::<UploadConf>() };
    if conf.cleanup.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    let mut ranges = Vec::new();
    // SAFETY: called by nginx while parsing this directive.
    for arg in unsafe { &args(cf)[1..] } {
        match parse_status_range(arg.as_bytes()) {
            Some(range) => ranges.push(range),
            None => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "invalid status \"{}\" in upload_cleanup: expected a status from 200 to 599 \
                     or a range of them such as 500-505",
                    arg
                );
                return NGX_CONF_ERROR;
            }
        }
    }
    conf.cleanup = Some(ranges);
    NGX_CONF_OK
}

fn parse_status_range(arg: &[u8]) -> Option<StatusRange> {
    let status = |s: &[u8]| -> Option<u16> {
        let n: u16 = std::str::from_utf8(s).ok()?.parse().ok()?;
        (s.len() == 3 && (200..=599).contains(&n)).then_some(n)
    };
    match arg.iter().position(|b| *b == b'-') {
        Some(dash) => {
            let (lo, hi) = (status(&arg[..dash])?, status(&arg[dash + 1..])?);
            (lo <= hi).then_some((lo, hi))
        }
        None => status(arg).map(|s| (s, s)),
    }
}
