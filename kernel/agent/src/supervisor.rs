//! The process containerizer's launcher. The agent forks a supervisor that starts its own
//! session, forks the task, waits for it and records its wait status in an exit file; the
//! supervisor is not the agent's to kill, so tasks outlive agent restarts and crashes.
//!
//! Everything after `fork` runs in a copy of a multithreaded process where any lock may be
//! held forever, so it uses only async-signal-safe libc calls on memory prepared before the
//! fork: no allocation, no Rust I/O, no panics.

use std::ffi::{CString, c_char};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The most cgroup membership files a task joins (v1: memory and cpu).
const MAX_CGROUP_FDS: usize = 4;

/// Everything the forked processes need, built before the fork.
pub(crate) struct Prepared {
    program: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    cwd: CString,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    cgroup_procs: Vec<OwnedFd>,
    exit_path: CString,
    /// Stack for the task process between clone and exec (it shares the supervisor's
    /// memory, like posix_spawn's child).
    _clone_stack: Vec<u8>,
    /// 16-byte aligned top of `_clone_stack` (stacks grow down), derived from a mutable
    /// pointer because the task process writes to it.
    clone_stack_top: usize,
    /// The same, as text, for handing the launch to the launcher process.
    pub(crate) wire: WireSpec,
}

/// What a launch needs besides its file descriptors, for the launcher process.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct WireSpec {
    pub(crate) program: String,
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: std::path::PathBuf,
    pub(crate) exit_path: std::path::PathBuf,
}

/// Size of `Prepared::clone_stack`.
const CLONE_STACK: usize = 64 * 1024;

// SAFETY: the raw pointers point into the CStrings owned by the same struct, which are never
// mutated after construction.
unsafe impl Send for Prepared {}

/// What to run and where its results go; file descriptors are opened by the caller.
pub(crate) struct Spec {
    pub(crate) program: String,
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: std::path::PathBuf,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
    pub(crate) cgroup_procs: Vec<OwnedFd>,
    pub(crate) exit_path: std::path::PathBuf,
}

fn cstring(what: &str, s: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

fn path_cstring(what: &str, p: &std::path::Path) -> io::Result<CString> {
    cstring(what, p.as_os_str().as_encoded_bytes().to_vec())
}

impl Prepared {
    /// The descriptors the task gets: stdout, stderr, then its cgroups' procs files.
    pub(crate) fn fds(&self) -> Vec<RawFd> {
        let mut v = vec![self.stdout.as_raw_fd(), self.stderr.as_raw_fd()];
        v.extend(self.cgroup_procs.iter().map(|f| f.as_raw_fd()));
        v
    }

    pub(crate) fn new(spec: Spec) -> io::Result<Prepared> {
        let wire = WireSpec {
            program: spec.program.clone(),
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            exit_path: spec.exit_path.clone(),
        };
        if spec.cgroup_procs.len() > MAX_CGROUP_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many cgroups",
            ));
        }
        let argv: Vec<CString> = spec
            .argv
            .iter()
            .map(|a| cstring("an argument", a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let envp: Vec<CString> = spec
            .env
            .iter()
            .map(|(k, v)| {
                if k.is_empty() || k.contains('=') {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("environment variable name '{k}' is empty or contains '='"),
                    ));
                }
                cstring("an environment variable", format!("{k}={v}"))
            })
            .collect::<io::Result<_>>()?;
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const c_char> = envp.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        let stdin = std::fs::File::open("/dev/null")?.into();
        let mut clone_stack = vec![0u8; CLONE_STACK];
        // SAFETY: one past the end of the allocation is a valid pointer to form.
        let clone_stack_top = unsafe { clone_stack.as_mut_ptr().add(CLONE_STACK) } as usize & !15;
        Ok(Prepared {
            program: cstring("the command", spec.program.as_bytes())?,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            cwd: path_cstring("the sandbox path", &spec.cwd)?,
            stdin,
            stdout: spec.stdout,
            stderr: spec.stderr,
            cgroup_procs: spec.cgroup_procs,
            exit_path: path_cstring("the exit file path", &spec.exit_path)?,
            clone_stack_top,
            _clone_stack: clone_stack,
            wire,
        })
    }
}

/// A started supervisor and the task under it (the task leads its own process group).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct Spawned {
    pub(crate) supervisor: i32,
    pub(crate) task: i32,
    /// `errno` of a failed `chdir` or `execve` in the task; the supervisor still records
    /// its exit (status 127) and ends.
    pub(crate) exec_errno: i32,
}

/// Forks the supervisor and waits until it reports the task's pid. Blocking.
pub(crate) fn spawn(p: &Prepared) -> io::Result<Spawned> {
    let mut report = [0 as RawFd; 2];
    // SAFETY: `report` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
    let (report_r, report_w) = unsafe {
        (
            OwnedFd::from_raw_fd(report[0]),
            OwnedFd::from_raw_fd(report[1]),
        )
    };

    // Descriptors the supervisor keeps above stderr, sorted so the rest can be closed in
    // ranges without allocating.
    let mut keep = [-1 as RawFd; MAX_CGROUP_FDS + 1];
    keep[0] = report_w.as_raw_fd();
    for (i, fd) in p.cgroup_procs.iter().enumerate() {
        keep[i + 1] = fd.as_raw_fd();
    }
    let n_keep = 1 + p.cgroup_procs.len();
    keep[..n_keep].sort_unstable();

    // SAFETY: see the module comment: the child only runs `supervise`, which is
    // async-signal-safe and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child.
        unsafe { supervise(p, report_w.as_raw_fd(), &keep[..n_keep]) }
    }
    drop(report_w);
    let mut buf = [0u8; 8];
    let mut got = 0;
    let file = std::fs::File::from(report_r);
    while got < buf.len() {
        match std::io::Read::read(&mut &file, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got < buf.len() {
        // The supervisor died before starting the task; reap it so it leaves no zombie.
        reap(pid);
        return Err(io::Error::other(
            "the task supervisor exited before starting the task",
        ));
    }
    let task = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let exec_errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if task <= 0 {
        reap(pid);
        return Err(io::Error::from_raw_os_error(exec_errno));
    }
    Ok(Spawned {
        supervisor: pid,
        task,
        exec_errno,
    })
}

/// Blocking wait for one of our own children.
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: plain syscall on our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && errno() == libc::EINTR {}
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The supervisor: new session, fork and wait for the task, record its status, exit.
///
/// # Safety
/// Must be called only in a freshly forked child; see the module comment.
unsafe fn supervise(p: &Prepared, report_w: RawFd, keep: &[RawFd]) -> ! {
    unsafe {
        libc::setsid();
        // The supervisor's own stdio becomes the task's, so nothing of the agent's terminal
        // or log pipe is held open by processes that outlive it.
        libc::dup2(p.stdin.as_raw_fd(), 0);
        libc::dup2(p.stdout.as_raw_fd(), 1);
        libc::dup2(p.stderr.as_raw_fd(), 2);
        close_all_but(keep);
        // A handler inherited from the agent's runtime would be meaningless here, and
        // SIG_IGN would make waitpid lose the status.
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);

        // The task shares our memory until it execs (CLONE_VM | CLONE_VFORK): no second
        // copy of the agent's page tables, and we resume only once it has exec'd or died,
        // with `exec_errno` set by it on failure.
        let mut start = TaskStart { p, exec_errno: 0 };
        let child = libc::clone(
            start_task,
            p.clone_stack_top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut start).cast(),
        );
        if child < 0 {
            report(report_w, 0, errno_raw());
            libc::_exit(112);
        }
        let exec_errno = std::ptr::read_volatile(&raw const start.exec_errno);
        report(report_w, child, exec_errno);
        libc::close(report_w);

        let mut status: libc::c_int = 0;
        loop {
            let r = libc::waitpid(child, &mut status, 0);
            if r == child {
                break;
            }
            if r < 0 && errno_raw() != libc::EINTR {
                // Nothing to wait for any more; record a generic failure.
                status = 0xff00;
                break;
            }
        }
        // Like a container being destroyed: nothing of the task outlives it.
        libc::kill(-child, libc::SIGKILL);
        write_exit_file(p, status);
        libc::_exit(0);
    }
}

/// What the task process gets from the supervisor, in memory they share until exec.
struct TaskStart<'a> {
    p: &'a Prepared,
    exec_errno: i32,
}

/// The task process, started by `clone(CLONE_VM | CLONE_VFORK)`: joins its cgroups and
/// process group, resets signals, execs. Async-signal-safe.
extern "C" fn start_task(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the supervisor's `TaskStart`, alive while the supervisor is
    // suspended in clone (CLONE_VFORK).
    unsafe {
        let start = &mut *arg.cast::<TaskStart<'_>>();
        let p = start.p;
        libc::setpgid(0, 0);
        for fd in &p.cgroup_procs {
            // "0" names the writer itself, in v1 and v2 alike.
            libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1);
        }
        // Rust ignores SIGPIPE and the agent's runtime may block or handle others; ignored
        // dispositions and the mask survive exec, so reset them for the task.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        if libc::chdir(p.cwd.as_ptr()) == 0 {
            libc::execve(
                p.program.as_ptr(),
                p.argv_ptrs.as_ptr(),
                p.envp_ptrs.as_ptr(),
            );
        }
        std::ptr::write_volatile(&raw mut start.exec_errno, errno_raw());
        libc::_exit(127);
    }
}

/// # Safety
/// Async-signal-safe; `report_w` is the supervisor's end of the report pipe.
unsafe fn report(report_w: RawFd, task: i32, exec_errno: i32) {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&task.to_ne_bytes());
    buf[4..].copy_from_slice(&exec_errno.to_ne_bytes());
    unsafe {
        libc::write(report_w, buf.as_ptr().cast(), 8);
    }
}

/// Writes `<wait status>\n` to the exit file and syncs it. An empty or partial file (the
/// supervisor killed mid-write) reads as no exit file: an abnormal end.
///
/// # Safety
/// Async-signal-safe.
unsafe fn write_exit_file(p: &Prepared, status: libc::c_int) {
    let mut buf = [0u8; 16];
    let n = format_i32(status, &mut buf);
    unsafe {
        let fd = libc::open(
            p.exit_path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            return;
        }
        libc::write(fd, buf.as_ptr().cast(), n);
        libc::fsync(fd);
        libc::close(fd);
    }
}

/// Decimal `v` followed by a newline into `buf`; returns the length. No allocation.
fn format_i32(v: i32, buf: &mut [u8; 16]) -> usize {
    let mut digits = [0u8; 12];
    let mut n = 0;
    let neg = v < 0;
    let mut u = (v as i64).unsigned_abs();
    loop {
        digits[n] = b'0' + (u % 10) as u8;
        n += 1;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    let mut len = 0;
    if neg {
        buf[0] = b'-';
        len = 1;
    }
    for i in (0..n).rev() {
        buf[len] = digits[i];
        len += 1;
    }
    buf[len] = b'\n';
    len + 1
}

fn errno_raw() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Closes every descriptor above stderr except `keep` (sorted ascending).
///
/// # Safety
/// Async-signal-safe; only in a forked child.
unsafe fn close_all_but(keep: &[RawFd]) {
    let mut next: u32 = 3;
    for &k in keep {
        let k = k as u32;
        if k > next {
            unsafe { close_range(next, k - 1) };
        }
        if k + 1 > next {
            next = k + 1;
        }
    }
    unsafe { close_range(next, u32::MAX) };
}

unsafe fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if r != 0 {
        // Kernels before 5.9: close one by one, up to a bound well above what we open.
        let end = last.min(65536);
        let mut fd = first;
        while fd <= end {
            unsafe { libc::close(fd as i32) };
            fd += 1;
        }
    }
}

/// How a task ended, decoded from the wait status in its exit file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub(crate) fn from_wait_status(status: i32) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }

    /// Parses the exit file's contents.
    pub(crate) fn parse(text: &str) -> Option<Exit> {
        text.trim().parse::<i32>().ok().map(Exit::from_wait_status)
    }

    /// The `exit_code` Mesos reports: the code, or 128+signal.
    pub(crate) fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }

    pub(crate) fn message(self) -> String {
        match self {
            Exit::Code(c) => format!("Command exited with status {c}"),
            Exit::Signal(s) => format!("Command terminated with signal {}", signal_name(s)),
        }
    }
}

pub(crate) fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return format!("{sig}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_format_without_allocating() {
        let mut b = [0u8; 16];
        let n = format_i32(0, &mut b);
        assert_eq!(&b[..n], b"0\n");
        let n = format_i32(768, &mut b);
        assert_eq!(&b[..n], b"768\n");
        let n = format_i32(i32::MIN, &mut b);
        assert_eq!(&b[..n], b"-2147483648\n");
    }

    #[test]
    fn exit_statuses_read_like_mesos() {
        let three = Exit::parse("768\n").expect("a wait status");
        assert_eq!(three, Exit::Code(3));
        assert_eq!(three.message(), "Command exited with status 3");
        let segv = Exit::from_wait_status(libc::SIGSEGV);
        assert_eq!(segv.message(), "Command terminated with signal SIGSEGV");
        assert_eq!(segv.code(), 128 + 11);
        assert_eq!(Exit::parse("garbage"), None);
    }

    #[test]
    fn a_spawned_task_leaves_its_status_in_the_exit_file() {
        let dir = std::env::temp_dir().join(format!("basalt-sup-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let out = std::fs::File::create(dir.join("stdout")).expect("stdout");
        let err = std::fs::File::create(dir.join("stderr")).expect("stderr");
        let p = Prepared::new(Spec {
            program: "/bin/sh".into(),
            argv: vec!["sh".into(), "-c".into(), "echo $GREETING; exit 4".into()],
            env: vec![("GREETING".into(), "hello".into())],
            cwd: dir.clone(),
            stdout: out.into(),
            stderr: err.into(),
            cgroup_procs: Vec::new(),
            exit_path: dir.join("exit"),
        })
        .expect("prepared");
        let s = spawn(&p).expect("spawned");
        assert_eq!(s.exec_errno, 0);
        reap(s.supervisor);
        let text = std::fs::read_to_string(dir.join("exit")).expect("exit file");
        assert_eq!(Exit::parse(&text), Some(Exit::Code(4)));
        let said = std::fs::read_to_string(dir.join("stdout")).expect("stdout");
        assert_eq!(said, "hello\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_program_reports_exec_errno() {
        let dir = std::env::temp_dir().join(format!("basalt-sup-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = Prepared::new(Spec {
            program: "/nonexistent/program".into(),
            argv: vec!["program".into()],
            env: Vec::new(),
            cwd: dir.clone(),
            stdout: std::fs::File::create(dir.join("stdout"))
                .expect("stdout")
                .into(),
            stderr: std::fs::File::create(dir.join("stderr"))
                .expect("stderr")
                .into(),
            cgroup_procs: Vec::new(),
            exit_path: dir.join("exit"),
        })
        .expect("prepared");
        let s = spawn(&p).expect("spawned");
        assert_eq!(s.exec_errno, libc::ENOENT);
        reap(s.supervisor);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
