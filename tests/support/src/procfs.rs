//! What the kernel tells about other processes, through `/proc` and sock_diag: their children
//! and states, their TCP sockets and what waits unread in them, the file locks they hold,
//! whether a tracer is attached, their CPU time and memory. The harness waits on these
//! instead of sleeping: each is the very state a test waits for.

use std::collections::BTreeSet;
use std::fs;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

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

/// Bytes written to `conn` that its peer (a process on this machine) may not have read yet:
/// not yet acknowledged by the peer's end (`SIOCOUTQ`: unsent, or on their way), or waiting in
/// its receive queue (sock_diag). 0 once the peer has read everything; bytes acknowledged but
/// unread count twice. `None` while the peer has not accepted the connection.
pub fn unread_by_peer(conn: &TcpStream) -> std::io::Result<Option<u64>> {
    let mut unacked: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int through the pointer; the descriptor is open.
    if unsafe { libc::ioctl(conn.as_raw_fd(), libc::TIOCOUTQ as _, &mut unacked) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (SocketAddr::V4(ours), SocketAddr::V4(theirs)) = (conn.local_addr()?, conn.peer_addr()?)
    else {
        return Err(std::io::Error::other("not an IPv4 connection"));
    };
    // The peer's end: local address `theirs`, remote `ours`.
    Ok(tcp_diag(theirs, ours)?.map(|(rqueue, _)| u64::from(rqueue) + unacked as u64))
}

/// The receive queue (bytes the owner has not read) and inode of the TCP socket with local
/// address `local` and remote `remote`, looked up by the kernel (sock_diag, like `ss`);
/// `None` if there is no such socket or no process has accepted it yet (inode 0). One
/// netlink exchange, where `/proc/net/tcp` lists every socket of the machine.
fn tcp_diag(local: SocketAddrV4, remote: SocketAddrV4) -> std::io::Result<Option<(u32, u32)>> {
    const NETLINK_SOCK_DIAG: libc::c_int = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a socket we own; OwnedFd closes it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // struct nlmsghdr, then struct inet_diag_req_v2 (family, protocol, ext, pad, states,
    // inet_diag_sockid: sport, dport, src[16], dst[16], if, cookie[2]).
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel assigns ours
    req.extend_from_slice(&[libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // any state
    req.extend_from_slice(&local.port().to_be_bytes());
    req.extend_from_slice(&remote.port().to_be_bytes());
    for ip in [local.ip(), remote.ip()] {
        req.extend_from_slice(&ip.octets());
        req.extend_from_slice(&[0; 12]);
    }
    req.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    req.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    debug_assert_eq!(req.len(), 72);
    // SAFETY: the kernel's netlink address is all zero but for the family.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: req and kernel are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut reply = [0u8; 8192];
    // SAFETY: reply is writable for its length.
    let got = unsafe { libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let reply = &reply[..got as usize];
    let u16_at = |at: usize| {
        reply
            .get(at..at + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        reply
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    match u16_at(4) {
        // struct nlmsgerr: the negative errno; ENOENT: no such socket.
        Some(NLMSG_ERROR) => match u32_at(16).map(|e| -(e as i32)) {
            Some(libc::ENOENT) => Ok(None),
            Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
            None => Err(std::io::Error::other("short netlink error")),
        },
        // struct inet_diag_msg after the header: rqueue at 56, inode at 68.
        Some(SOCK_DIAG_BY_FAMILY) => match (u32_at(16 + 56), u32_at(16 + 68)) {
            (Some(_), Some(0)) => Ok(None),
            (Some(rqueue), Some(inode)) => Ok(Some((rqueue, inode))),
            _ => Err(std::io::Error::other("short sock_diag answer")),
        },
        other => Err(std::io::Error::other(format!(
            "unexpected netlink message type {other:?}"
        ))),
    }
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

/// The files process `pid` has open, as their paths (a removed file's ends in " (deleted)").
pub fn open_files(pid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
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

/// Pids of the processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    if parent == 0 {
        return pids;
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(fields) = stat_fields(pid) {
            if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
/// parentheses): index 0 is field 3 (the state), 1 the parent's pid.
pub fn stat_fields(pid: u32) -> std::io::Result<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| std::io::Error::other("malformed stat"))?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// Waits (up to 5 s) until process `pid` is in one of `states` (`R`, `T`, `Z`, … of
/// `/proc/<pid>/stat`), or gone; panics if it is not.
#[track_caller]
pub fn wait_process_state(pid: u32, states: &[&str]) {
    crate::wait::wait_for(
        &format!("process {pid} to reach state {states:?}"),
        Duration::from_secs(5),
        || match stat_fields(pid) {
            Err(_) => Ok(()),
            Ok(fields) if fields.first().is_some_and(|s| states.contains(&s.as_str())) => Ok(()),
            Ok(fields) => Err(format!("state {:?}", fields.first())),
        },
    )
}

/// (utime, stime) of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<(u64, u64), String> {
    let fields = stat_fields(pid).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let get = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat: no field {}", i + 3))
    };
    // Fields 14 (utime) and 15 (stime).
    Ok((get(11)?, get(12)?))
}

/// Clock ticks per second, the unit of [`cpu_ticks`].
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, key: &str) -> Result<u64, String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status has no {key}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn unread_by_peer_counts_what_the_peer_has_not_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(unread_by_peer(&client).unwrap(), None, "not accepted yet");
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(unread_by_peer(&client).unwrap(), Some(0));
        client.write_all(&[7; 100]).unwrap();
        assert!(unread_by_peer(&client).unwrap() >= Some(100));
        let mut buf = [0; 60];
        server.read_exact(&mut buf).unwrap();
        assert!(unread_by_peer(&client).unwrap() >= Some(40));
        server.read_exact(&mut buf[..40]).unwrap();
        crate::wait::wait_for("the peer's acknowledgement", Duration::from_secs(5), || {
            match unread_by_peer(&client) {
                Ok(Some(0)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }

    #[test]
    fn held_connections_lists_accepted_connections_until_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let ours = format!(
            "connection from port {} ",
            client.local_addr().unwrap().port()
        );
        let mine = || {
            held_connections(std::process::id(), port)
                .into_iter()
                .filter(|c| c.contains(&ours))
                .count()
        };
        assert_eq!(
            mine(),
            0,
            "the listening socket and unaccepted ones do not count"
        );
        let (server, _) = listener.accept().unwrap();
        assert_eq!(mine(), 1);
        drop(server);
        assert_eq!(mine(), 0);
    }

    #[test]
    fn ofd_locks_shows_a_range_lock_while_it_is_held() {
        let dir = crate::prefix::fresh_dir("procfs-test");
        let path = dir.join("locked");
        let file = fs::File::create(&path).unwrap();
        assert_eq!(ofd_locks(&path), []);
        // SAFETY: flock is plain data; all-zero is valid (l_pid 0, as OFD locks need).
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = 10;
        lock.l_len = 10;
        // SAFETY: F_OFD_SETLK with a valid flock on an open descriptor.
        assert_eq!(
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) },
            0
        );
        assert_eq!(ofd_locks(&path), [(10, Some(19))]);
        drop(file);
        assert_eq!(ofd_locks(&path), []);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn children_and_states_of_a_child_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(children_of(std::process::id()).contains(&child.id()));
        assert_eq!(tracers(child.id()), [0]);
        child.kill().unwrap();
        wait_process_state(child.id(), &["Z"]);
        child.wait().unwrap();
        assert!(stat_fields(child.id()).is_err(), "reaped");
    }
}
