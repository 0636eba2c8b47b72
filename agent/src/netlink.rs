//! The one rtnetlink request the supervisor needs: deleting a network interface.

use std::{ffi::CString, io, mem::size_of};

use nix::libc;

/// Deletes interface `name`; a missing interface is not an error.
pub fn delete_link(name: &str) -> io::Result<()> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: cname is a valid C string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Ok(());
    }
    /// struct ifinfomsg, spelled out: libc's has private padding fields.
    #[repr(C)]
    struct IfInfo {
        family: u8,
        pad: u8,
        kind: u16,
        index: i32,
        flags: u32,
        change: u32,
    }
    #[repr(C)]
    struct Request {
        header: libc::nlmsghdr,
        info: IfInfo,
    }
    let request = Request {
        header: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: libc::RTM_DELLINK,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        info: IfInfo { family: libc::AF_UNSPEC as u8, pad: 0, kind: 0, index: index as i32, flags: 0, change: 0 },
    };
    // SAFETY: plain socket calls on a descriptor owned here, with buffers of the stated sizes.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let sent = libc::send(raw, (&request as *const Request).cast(), size_of::<Request>(), 0);
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        // The acknowledgement: an nlmsgerr whose error is 0 or a negative errno.
        let mut buf = [0u8; 1024];
        let n = libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let header_len = size_of::<libc::nlmsghdr>();
        if (n as usize) < header_len + size_of::<i32>() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink answer"));
        }
        let header: libc::nlmsghdr = std::ptr::read_unaligned(buf.as_ptr().cast());
        if header.nlmsg_type != libc::NLMSG_ERROR as u16 {
            return Ok(());
        }
        let error: i32 = std::ptr::read_unaligned(buf.as_ptr().add(header_len).cast());
        if error < 0 {
            return Err(io::Error::from_raw_os_error(-error));
        }
    }
    Ok(())
}
