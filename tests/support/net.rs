//! Facts about this machine's sockets that tests wait on instead of guessing with sleeps.

use std::net::Ipv4Addr;

/// Whether the server on port `server` has read everything sent to it on the connection from
/// local port `client`: the client's send queue is empty (the server's kernel has the bytes)
/// and the server socket's receive queue is empty (its process has read them). From
/// `/proc/net/tcp` (Linux); false while either socket is not listed.
pub fn read_by_server(client: u16, server: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let (mut sent, mut read) = (false, false);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(queues)) = (
            fields.get(1).and_then(|a| port(a)),
            fields.get(2).and_then(|a| port(a)),
            fields.get(4),
        ) else {
            continue;
        };
        let (tx, rx) = queues.split_once(':').unwrap_or(("1", "1"));
        let empty = |q: &str| u64::from_str_radix(q, 16) == Ok(0);
        if (local, remote) == (client, server) {
            sent = empty(tx);
        } else if (local, remote) == (server, client) {
            read = empty(rx);
        }
    }
    sent && read
}

/// The port of a `/proc/net/tcp` address (`0100007F:1F90`).
fn port(address: &str) -> Option<u16> {
    u16::from_str_radix(address.split_once(':')?.1, 16).ok()
}

/// An IPv4 address of this machine other than loopback, to connect from when a test needs a
/// client that is not on loopback (the proxy still listens on 127.0.0.1).
pub fn non_loopback_ipv4() -> Option<Ipv4Addr> {
    let mut found = None;
    // SAFETY: getifaddrs fills a list this function frees before returning; each entry's
    // address is read only when it is an AF_INET sockaddr.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut entry = list;
        while !entry.is_null() {
            let addr = (*entry).ifa_addr;
            if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let v4 = &*(addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                if !ip.is_loopback() && !ip.is_unspecified() {
                    found = Some(ip);
                    break;
                }
            }
            entry = (*entry).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}
