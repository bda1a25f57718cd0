// The one place pgswift calls raw Glibc for file descriptors: EINTR retried, EAGAIN as a value,
// other errors thrown as SyscallError, EBADF/EFAULT treated as bugs.
import Glibc
import CLinux

/// Result of a non-blocking I/O call: bytes moved, or "try again when the fd is ready".
public enum IOResult: Equatable, Sendable {
    case processed(Int)
    case wouldBlock
}

public enum Posix {
    /// EBADF/EFAULT from a call on an fd we own means a pgswift bug (a stale fd or a bad pointer):
    /// stop here rather than carry on with a descriptor that may belong to someone else by now.
    @usableFromInline
    static func isBug(_ e: Errno) -> Bool {
        e == .badFileDescriptor || e == .badAddress
    }

    @usableFromInline
    static func bug(_ call: String, _ e: Errno) -> Never {
        preconditionFailure("\(call) failed with \(e): this is a pgswift bug")
    }

    // MARK: The retry helpers (every EINTR loop in pgswift is one of these two)

    /// Runs a non-blocking I/O call that returns a count or -1: again while it fails with EINTR;
    /// EAGAIN comes back as `.wouldBlock`; any other errno is thrown as `SyscallError(name)`, and with
    /// `badFDIsBug` EBADF/EFAULT stop the process. errno is read right after the call, nothing between.
    /// Always inlined with its closure: a wrapper built on it compiles to the loop it replaces (the
    /// error text is built only on the throwing path).
    @inlinable @inline(__always)
    public static func retrying(_ name: @autoclosure () -> String, badFDIsBug: Bool = true,
                                _ call: () -> Int) throws(SyscallError) -> IOResult {
        while true {
            let n = call()
            if n >= 0 { return .processed(n) }
            let e = Errno.current
            if e == .interrupted { continue }
            if e == .wouldBlock { return .wouldBlock }
            if badFDIsBug && isBug(e) { bug(name(), e) }
            throw SyscallError(name(), e)
        }
    }

    /// Runs a call that returns a non-negative value or -1 (open, waitpid, poll, read on a blocking
    /// fd...): again while it fails with EINTR; any other errno, EAGAIN included, is thrown.
    @inlinable @inline(__always)
    public static func retryingInterrupts<T: BinaryInteger>(_ name: @autoclosure () -> String,
                                                            _ call: () -> T) throws(SyscallError) -> T {
        while true {
            let r = call()
            if r >= 0 { return r }
            let e = Errno.current
            if e == .interrupted { continue }
            throw SyscallError(name(), e)
        }
    }

    // MARK: Reading and writing

    /// read(2). `.processed(0)` means end of file.
    @inlinable
    public static func read(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        try retrying("read") { Glibc.read(fd, buf, count) }
    }

    /// recv(2) with no flags: read(2) for sockets, minus the VFS layer read(2) goes through first
    /// (measured with bench/profile.py: vfs_read alone was ~3 % of a worker's CPU). `.processed(0)`
    /// means end of file.
    @inlinable @inline(__always)
    public static func recv(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        try retrying("recv") { Glibc.recv(fd, buf, count, 0) }
    }

    /// send(2) with MSG_NOSIGNAL so a closed peer is EPIPE, never SIGPIPE.
    @inlinable @inline(__always)
    public static func send(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        try retrying("send") { Glibc.send(fd, buf, count, cl_MSG_NOSIGNAL()) }
    }

    /// write(2) for non-socket fds (pipes, files, signal/event fds).
    @inlinable
    public static func write(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        try retrying("write") { Glibc.write(fd, buf, count) }
    }

    /// sendmsg(2) of several buffers at once (writev semantics, MSG_NOSIGNAL).
    @inlinable
    public static func sendv(_ fd: Int32, _ iov: UnsafeMutablePointer<iovec>, _ count: Int) throws(SyscallError) -> IOResult {
        var msg = msghdr()
        msg.msg_iov = iov
        msg.msg_iovlen = count
        return try retrying("sendmsg") { Glibc.sendmsg(fd, &msg, cl_MSG_NOSIGNAL()) }
    }

    /// sendmsg(2) of `aCount` bytes at `a`, then `bCount` at `b` (MSG_NOSIGNAL): one system call where
    /// two sends would be.
    @inlinable
    public static func send(_ fd: Int32, _ a: UnsafeRawPointer, _ aCount: Int,
                            then b: UnsafeRawPointer, _ bCount: Int) throws(SyscallError) -> IOResult {
        var iov = (iovec(iov_base: UnsafeMutableRawPointer(mutating: a), iov_len: aCount),
                   iovec(iov_base: UnsafeMutableRawPointer(mutating: b), iov_len: bCount))
        return try withUnsafeMutablePointer(to: &iov) { (pair) throws(SyscallError) -> IOResult in
            try pair.withMemoryRebound(to: iovec.self, capacity: 2) { (v) throws(SyscallError) -> IOResult in
                try sendv(fd, v, 2)
            }
        }
    }

    /// Writes everything to a blocking fd (logs, pid files); gives up on error.
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var off = 0
        while off < bytes.count {
            let r = try? retrying("write", badFDIsBug: false) { Glibc.write(fd, bytes.baseAddress! + off, bytes.count - off) }
            guard case .processed(let n)? = r else { return false }
            off += n
        }
        return true
    }

    public static func close(_ fd: Int32) {
        // Linux closes the fd even when close() reports EINTR: never retry.
        _ = Glibc.close(fd)
    }

    // MARK: File descriptor flags

    public static func setNonBlocking(_ fd: Int32) throws(SyscallError) {
        let flags = fcntl(fd, F_GETFL)
        if flags < 0 { throw SyscallError("fcntl(F_GETFL)", .current) }
        if fcntl(fd, F_SETFL, flags | cl_O_NONBLOCK()) < 0 { throw SyscallError("fcntl(F_SETFL)", .current) }
    }

    public static func setCloseOnExec(_ fd: Int32, _ on: Bool) throws(SyscallError) {
        let flags = fcntl(fd, F_GETFD)
        if flags < 0 { throw SyscallError("fcntl(F_GETFD)", .current) }
        let newFlags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC)
        if fcntl(fd, F_SETFD, newFlags) < 0 { throw SyscallError("fcntl(F_SETFD)", .current) }
    }

    public static func dup(_ fd: Int32) throws(SyscallError) -> Int32 {
        let r = fcntl(fd, F_DUPFD_CLOEXEC, 3)
        if r < 0 { throw SyscallError("fcntl(F_DUPFD_CLOEXEC)", .current) }
        return r
    }

    // MARK: Pipes and socket pairs

    public static func pipe() throws(SyscallError) -> (read: Int32, write: Int32) {
        var fds: (Int32, Int32) = (-1, -1)
        let r = withUnsafeMutablePointer(to: &fds) {
            $0.withMemoryRebound(to: Int32.self, capacity: 2) { cl_pipe2($0, cl_O_NONBLOCK() | cl_O_CLOEXEC()) }
        }
        if r < 0 { throw SyscallError("pipe2", .current) }
        return fds
    }

    /// A connected pair of non-blocking, close-on-exec Unix sockets of the given type.
    public static func socketPair(type: Int32 = cl_SOCK_SEQPACKET()) throws(SyscallError) -> (Int32, Int32) {
        var fds: (Int32, Int32) = (-1, -1)
        let r = withUnsafeMutablePointer(to: &fds) {
            $0.withMemoryRebound(to: Int32.self, capacity: 2) {
                Glibc.socketpair(AF_UNIX, type | cl_SOCK_NONBLOCK() | cl_SOCK_CLOEXEC(), 0, $0)
            }
        }
        if r < 0 { throw SyscallError("socketpair", .current) }
        return fds
    }

    /// Sends bytes plus descriptors (SCM_RIGHTS) on a Unix socket.
    public static func sendWithFDs(_ sock: Int32, _ bytes: UnsafeRawBufferPointer, fds: [Int32]) throws(SyscallError) -> IOResult {
        try fds.withUnsafeBufferPointer { (fdp) throws(SyscallError) -> IOResult in
            try retrying("sendmsg(SCM_RIGHTS)", badFDIsBug: false) {
                cl_send_fds(sock, bytes.baseAddress, bytes.count, fdp.baseAddress, Int32(fdp.count))
            }
        }
    }

    /// Receives bytes and up to 8 descriptors from a Unix socket. `.processed(0)` is end of file.
    public static func receiveWithFDs(_ sock: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int,
                                      fds: inout [Int32]) throws(SyscallError) -> IOResult {
        var got = [Int32](repeating: -1, count: 8)
        var nfds: Int32 = 0
        let r = try retrying("recvmsg", badFDIsBug: false) {
            got.withUnsafeMutableBufferPointer { cl_recv_fds(sock, buf, count, $0.baseAddress, 8, &nfds) }
        }
        if case .processed = r { fds = Array(got.prefix(Int(nfds))) }
        return r
    }

    // MARK: Processes

    public static func getpid() -> Int32 { Glibc.getpid() }

    /// This process's real user id.
    public static func getuid() -> UInt32 { Glibc.getuid() }

    /// This machine's host name (gethostname), "" if it cannot be read.
    public static func hostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, buf.count - 1) == 0 else { return "" }
        return cStringText(buf)
    }

    /// True if `pid` names a live process (kill with signal 0); one we may not signal counts as live.
    public static func processExists(_ pid: Int32) -> Bool {
        if pid <= 0 { return false }
        return Glibc.kill(pid, 0) == 0 || Errno.current == .notPermitted
    }

    public static func kill(_ pid: Int32, _ signal: Int32) throws(SyscallError) {
        if Glibc.kill(pid, signal) < 0 { throw SyscallError("kill", .current) }
    }

    /// Reaps one exited child without blocking: nil when none is waiting.
    public static func reapChild() -> (pid: Int32, status: ChildStatus)? {
        var status: Int32 = 0
        guard let pid = try? retryingInterrupts("waitpid", { waitpid(-1, &status, WNOHANG) }), pid > 0 else { return nil }
        return (pid, ChildStatus(raw: status))
    }

    /// Starts `path` with a cleared signal mask and default dispositions; `fds` become 3, 4, 5...
    public static func spawn(path: String, arguments: [String], environment: [String],
                             fds: [Int32]) throws(SyscallError) -> Int32 {
        var pid: pid_t = 0
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let rc = fds.withUnsafeBufferPointer { fdp in
            argv.withUnsafeBufferPointer { a in
                envp.withUnsafeBufferPointer { e in
                    cl_spawn(&pid, path, a.baseAddress, e.baseAddress, fdp.baseAddress, Int32(fdp.count))
                }
            }
        }
        if rc != 0 { throw SyscallError("posix_spawn(\(path))", Errno(rawValue: rc)) }
        return pid
    }

    /// The environment of this process, as KEY=VALUE strings.
    public static func environment() -> [String] {
        var result: [String] = []
        var p = environ
        while let entry = p.pointee {
            result.append(String(cString: entry))
            p += 1
        }
        return result
    }

    public static func getenv(_ name: String) -> String? {
        guard let v = Glibc.getenv(name) else { return nil }
        return String(cString: v)
    }

    /// Path of the running executable (/proc/self/exe).
    public static func executablePath() -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        if n <= 0 { return nil }
        return String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func fileExists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    public static func isExecutable(_ path: String) -> Bool {
        access(path, X_OK) == 0
    }

    /// Processors online now (sysconf(_SC_NPROCESSORS_ONLN)); -1 if unknown.
    public static func onlineProcessors() -> Int { sysconf(Int32(_SC_NPROCESSORS_ONLN)) }

    /// Clock ticks per second of /proc's CPU times (sysconf(_SC_CLK_TCK)); -1 if unknown.
    public static func clockTicksPerSecond() -> Int { sysconf(Int32(_SC_CLK_TCK)) }

    /// The memory page size in bytes (sysconf(_SC_PAGESIZE)).
    public static func pageSize() -> Int { sysconf(Int32(_SC_PAGESIZE)) }

    // MARK: Waiting on one descriptor

    /// poll(2) on one fd for `events` (POLLIN, POLLOUT): true when ready, false after `timeoutMillis`.
    /// A signal restarts the wait with the full timeout, as the callers' hand-written loops did.
    public static func poll(_ fd: Int32, events: Int16, timeoutMillis: Int32) throws(SyscallError) -> Bool {
        var p = pollfd(fd: fd, events: events, revents: 0)
        return try retryingInterrupts("poll") { Glibc.poll(&p, 1, timeoutMillis) } > 0
    }

    /// Raises the soft open-files limit to the hard limit (a pooler needs many sockets).
    public static func raiseOpenFilesLimit() -> Int {
        var lim = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0 {
            if lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max
                _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
            }
            return Int(lim.rlim_cur)
        }
        return 1024
    }
}

/// How a child process ended.
public enum ChildStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)
    case other(Int32)

    public init(raw: Int32) {
        if cl_WIFEXITED(raw) != 0 {
            self = .exited(cl_WEXITSTATUS(raw))
        } else if cl_WIFSIGNALED(raw) != 0 {
            self = .signaled(cl_WTERMSIG(raw))
        } else {
            self = .other(raw)
        }
    }

    public var description: String {
        switch self {
        case .exited(let c): return "exited with status \(c)"
        case .signaled(let s): return "killed by signal \(s)"
        case .other(let r): return "stopped (status \(r))"
        }
    }
}
