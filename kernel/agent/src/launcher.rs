//! The launcher: a small single-threaded process, started once per agent, that forks the
//! task supervisors. Forking the agent itself copies the page tables of a large
//! multi-threaded process and interrupts every CPU running one of its threads (TLB
//! shootdowns); forking this one costs a fraction of that. The agent sends each launch
//! as JSON with the task's file descriptors (SCM_RIGHTS) over a SEQPACKET socket and gets
//! the pids back. If the launcher is gone, the agent forks in-process as before.

use crate::supervisor::{self, Prepared, Spawned, Spec, WireSpec};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;

/// The argument that turns the `basalt` binary into a launcher.
pub const LAUNCHER_ARG: &str = "__basalt_launcher";
const MAX_FDS: usize = 8;
const MAX_MSG: usize = 1 << 20;

fn send_msg(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    // SAFETY: CMSG_SPACE is pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) } as usize;
    let mut cbuf = vec![0u8; space.max(1)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: zeroed msghdr is valid; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds one header with room for `fds`.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: `msg` is fully initialised above.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv_msg(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: zeroed msghdr is valid; pointers outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: as above.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel filled in.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = len / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(*data.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::other("launch message truncated"));
    }
    Ok((n as usize, fds))
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Reply {
    Spawned(Spawned),
    Failed { errno: Option<i32>, message: String },
}

/// The launcher process's main loop, on the socket at fd 0. Never returns.
pub fn launcher_main() -> ! {
    // SAFETY: a process-wide setting of a fresh single-threaded process: supervisors are
    // reaped by the kernel (the agent watches them by pidfd). The launcher ends when the
    // agent's end of the socket closes (the agent exited); PR_SET_PDEATHSIG would follow
    // the agent *thread* that started us, which may end first.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    let sock = 0;
    let mut buf = vec![0u8; MAX_MSG];
    loop {
        let (n, fds) = match recv_msg(sock, &mut buf) {
            Ok((0, _)) | Err(_) => std::process::exit(0),
            Ok(x) => x,
        };
        let reply = match launch(&buf[..n], fds) {
            Ok(s) => Reply::Spawned(s),
            Err(e) => Reply::Failed {
                errno: e.raw_os_error(),
                message: e.to_string(),
            },
        };
        let bytes = serde_json::to_vec(&reply).unwrap_or_default();
        if send_msg(sock, &bytes, &[]).is_err() {
            std::process::exit(0);
        }
    }
}

fn launch(req: &[u8], mut fds: Vec<OwnedFd>) -> io::Result<Spawned> {
    let w: WireSpec = serde_json::from_slice(req).map_err(io::Error::other)?;
    if fds.len() < 2 {
        return Err(io::Error::other("a launch needs stdout and stderr"));
    }
    let procs = fds.split_off(2);
    let mut it = fds.into_iter();
    let (Some(stdout), Some(stderr)) = (it.next(), it.next()) else {
        return Err(io::Error::other("a launch needs stdout and stderr"));
    };
    let p = Prepared::new(Spec {
        program: w.program,
        argv: w.argv,
        env: w.env,
        cwd: w.cwd,
        stdout,
        stderr,
        cgroup_procs: procs,
        exit_path: w.exit_path,
    })?;
    supervisor::spawn(&p)
}

/// The agent's end of the launcher.
pub(crate) struct Launcher {
    sock: Mutex<Option<OwnedFd>>,
}

impl Launcher {
    /// Starts `exe LAUNCHER_ARG` with one end of a socket pair as its stdin.
    pub(crate) fn start(exe: &Path) -> io::Result<Launcher> {
        let mut pair = [0 as RawFd; 2];
        // SAFETY: `pair` has room for the two descriptors.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socketpair succeeded; both are ours.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        for fd in [ours.as_raw_fd(), theirs.as_raw_fd()] {
            let size: libc::c_int = (MAX_MSG * 2) as libc::c_int;
            // SAFETY: setsockopt with a valid int option.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&raw const size).cast(),
                    4,
                );
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&raw const size).cast(),
                    4,
                );
            }
        }
        std::process::Command::new(exe)
            .arg(LAUNCHER_ARG)
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .spawn()?;
        Ok(Launcher {
            sock: Mutex::new(Some(ours)),
        })
    }

    /// Hands a launch to the launcher. Blocking. `Ok(None)`: the launcher is gone.
    pub(crate) fn spawn(&self, p: &Prepared) -> io::Result<Option<Spawned>> {
        let mut guard = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sock) = guard.as_ref() else {
            return Ok(None);
        };
        let req = serde_json::to_vec(&p.wire).map_err(io::Error::other)?;
        let fd = sock.as_raw_fd();
        let mut buf = vec![0u8; 64 * 1024];
        let reply = send_msg(fd, &req, &p.fds()).and_then(|()| recv_msg(fd, &mut buf));
        let n = match reply {
            Ok((n, _)) if n > 0 => n,
            _ => {
                tracing::warn!("the task launcher is gone; forking in the agent from now on");
                *guard = None;
                return Ok(None);
            }
        };
        match serde_json::from_slice::<Reply>(&buf[..n]).map_err(io::Error::other)? {
            Reply::Spawned(s) => Ok(Some(s)),
            Reply::Failed { errno: Some(e), .. } => Err(io::Error::from_raw_os_error(e)),
            Reply::Failed { message, .. } => Err(io::Error::other(message)),
        }
    }
}
