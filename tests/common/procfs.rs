//! What the kernel tells about other processes through `/proc`: their TCP sockets, the file
//! locks they hold, whether a tracer is attached. The harness
//! waits on these instead of sleeping: each is the very state a test waits for.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// `TCP_LISTEN` in the `st` column of `/proc/net/tcp`.
const TCP_LISTEN: u8 = 0x0a;

/// One line of `/proc/<pid>/net/tcp` or `tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    pub local_port: u16,
    pub remote_port: u16,
    /// The kernel's TCP state (`0x01` established, `0x0a` listening, …).
    pub state: u8,
    /// Bytes received that the owning process has not read yet.
    pub rx_queue: u64,
    /// 0 for a socket no process holds (not yet accepted, or closed and lingering).
    pub inode: u64,
}

impl TcpSocket {
    pub fn is_listening(&self) -> bool {
        self.state == TCP_LISTEN
    }
}

/// The TCP sockets of the network namespace process `pid` is in (IPv4 and IPv6).
pub fn tcp_sockets(pid: u32) -> Vec<TcpSocket> {
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |addr: &str| {
                addr.rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            };
            let rx_queue = f[4]
                .split_once(':')
                .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok());
            if let (Some(local_port), Some(remote_port), Ok(state), Some(rx_queue), Ok(inode)) = (
                port(f[1]),
                port(f[2]),
                u8::from_str_radix(f[3], 16),
                rx_queue,
                f[9].parse(),
            ) {
                out.push(TcpSocket {
                    local_port,
                    remote_port,
                    state,
                    rx_queue,
                    inode,
                });
            }
        }
    }
    out
}

/// Inodes of the sockets process `pid` has open (`/proc/<pid>/fd/* -> socket:[inode]`).
pub fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Inodes of the sockets of `pid`'s namespace that are not TCP: Unix, UDP, netlink, raw.
fn non_tcp_socket_inodes(pid: u32) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    // Each table's inode column.
    for (table, column) in [
        ("unix", 6),
        ("udp", 9),
        ("udp6", 9),
        ("raw", 9),
        ("raw6", 9),
        ("netlink", 9),
    ] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            if let Some(inode) = line
                .split_whitespace()
                .nth(column)
                .and_then(|i| i.parse().ok())
            {
                out.insert(inode);
            }
        }
    }
    out
}

/// The connections process `pid` holds open that were accepted on `port`, described; a TCP
/// socket being closed has left the tables but is still open, so a socket in no table counts
/// too. The listening socket and every other socket (upstream connections, the master's
/// channel, …) do not.
pub fn held_connections(pid: u32, port: u16) -> Vec<String> {
    let held = socket_inodes(pid);
    if held.is_empty() {
        return Vec::new();
    }
    let tcp = tcp_sockets(pid);
    let other = non_tcp_socket_inodes(pid);
    held.into_iter()
        .filter_map(|inode| match tcp.iter().find(|s| s.inode == inode) {
            Some(s) if s.local_port == port && !s.is_listening() => Some(format!(
                "pid {pid}: connection from port {} (state {:02X}, {} bytes unread)",
                s.remote_port, s.state, s.rx_queue
            )),
            Some(_) => None,
            None if other.contains(&inode) => None,
            None => Some(format!("pid {pid}: socket {inode}, closing")),
        })
        .collect()
}

/// The byte ranges `(start, end inclusive; None for "to the end")` of the open-file-description
/// locks held on the file at `path` (`/proc/locks`).
pub fn ofd_locks(path: &Path) -> Vec<(u64, Option<u64>)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(path) else {
        return Vec::new();
    };
    let dev = meta.dev();
    let file = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let Ok(text) = fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    // "1: OFDLCK  ADVISORY  WRITE -1 08:01:1234 0 99999"; "->" marks a waiter.
    text.lines()
        .filter(|l| !l.contains("->"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 || f[1] != "OFDLCK" || f[5] != file {
                return None;
            }
            let start = f[6].parse().ok()?;
            let end = if f[7] == "EOF" {
                None
            } else {
                Some(f[7].parse().ok()?)
            };
            Some((start, end))
        })
        .collect()
}

/// The tracer (`TracerPid`) of every thread of process `pid`; empty if it is gone.
pub fn tracers(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let status = fs::read_to_string(task.path().join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|p| p.trim().parse().ok())
        })
        .collect()
}
