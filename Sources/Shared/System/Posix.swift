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
    @usableFromInline
    static func fatalIfBug(_ call: StaticString, _ e: Errno) {
        if e == .badFileDescriptor || e == .badAddress {
            preconditionFailure("\(call) failed with \(e): this is a pgswift bug")
        }
    }

    // MARK: Reading and writing

    /// read(2). `.processed(0)` means end of file.
    @inlinable
    public static func read(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        while true {
            let n = Glibc.read(fd, buf, count)
            if n >= 0 { return .processed(n) }
            let e = Errno.current
            if e == .interrupted { continue }
            if e == .wouldBlock { return .wouldBlock }
            fatalIfBug("read", e)
            throw SyscallError("read", e)
        }
    }

    /// recv(2) with no flags: read(2) for sockets, minus the VFS layer read(2) goes through first
    /// (measured with bench/profile.py: vfs_read alone was ~3 % of a worker's CPU). `.processed(0)`
    /// means end of file.
    @inlinable
    public static func recv(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        while true {
            let n = Glibc.recv(fd, buf, count, 0)
            if n >= 0 { return .processed(n) }
            let e = Errno.current
            if e == .interrupted { continue }
            if e == .wouldBlock { return .wouldBlock }
            fatalIfBug("recv", e)
            throw SyscallError("recv", e)
        }
    }

    /// send(2) with MSG_NOSIGNAL so a closed peer is EPIPE, never SIGPIPE.
    @inlinable
    public static func send(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        while true {
            let n = Glibc.send(fd, buf, count, cl_MSG_NOSIGNAL())
            if n >= 0 { return .processed(n) }
            let e = Errno.current
            if e == .interrupted { continue }
            if e == .wouldBlock { return .wouldBlock }
            fatalIfBug("send", e)
            throw SyscallError("send", e)
        }
    }

    /// write(2) for non-socket fds (pipes, files, signal/event fds).
    @inlinable
    public static func write(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int) throws(SyscallError) -> IOResult {
        while true {
            let n = Glibc.write(fd, buf, count)
            if n >= 0 { return .processed(n) }
            let e = Errno.current
            if e == .interrupted { continue }
            if e == .wouldBlock { return .wouldBlock }
            fatalIfBug("write", e)
            throw SyscallError("write", e)
        }
    }

    /// sendmsg(2) of several buffers at once (writev semantics, MSG_NOSIGNAL).
    @inlinable
    public static func sendv(_ fd: Int32, _ iov: UnsafeMutablePointer<iovec>, _ count: Int) throws(SyscallError) -> IOResult {
        var msg = msghdr()
        msg.msg_iov = iov
        msg.msg_iovlen = count
        while true {
            let n = Glibc.sendmsg(fd, &msg, cl_MSG_NOSIGNAL())
            if n >= 0 { return .processed(n) }
            let e = Errno.current
            if e == .interrupted { continue }
            if e == .wouldBlock { return .wouldBlock }
            fatalIfBug("sendmsg", e)
            throw SyscallError("sendmsg", e)
        }
    }

    /// Writes everything to a blocking fd (logs, pid files); gives up on error.
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 {
                if Errno.current == .interrupted { continue }
                return false
            }
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
        while true {
            let n = fds.withUnsafeBufferPointer {
                cl_send_fds(sock, bytes.baseAddress, bytes.count, $0.baseAddress, Int32($0.count))
            }
            if n >= 0 { return .processed(n) }
            let e = Errno.current
            if e == .interrupted { continue }
            if e == .wouldBlock { return .wouldBlock }
            throw SyscallError("sendmsg(SCM_RIGHTS)", e)
        }
    }

    /// Receives bytes and up to 8 descriptors from a Unix socket. `.processed(0)` is end of file.
    public static func receiveWithFDs(_ sock: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int,
                                      fds: inout [Int32]) throws(SyscallError) -> IOResult {
        var got = [Int32](repeating: -1, count: 8)
        var nfds: Int32 = 0
        while true {
            let n = got.withUnsafeMutableBufferPointer { cl_recv_fds(sock, buf, count, $0.baseAddress, 8, &nfds) }
            if n >= 0 {
                fds = Array(got.prefix(Int(nfds)))
                return .processed(n)
            }
            let e = Errno.current
            if e == .interrupted { continue }
            if e == .wouldBlock { return .wouldBlock }
            throw SyscallError("recvmsg", e)
        }
    }

    // MARK: Processes

    public static func getpid() -> Int32 { Glibc.getpid() }

    public static func kill(_ pid: Int32, _ signal: Int32) throws(SyscallError) {
        if Glibc.kill(pid, signal) < 0 { throw SyscallError("kill", .current) }
    }

    /// Reaps one exited child without blocking: nil when none is waiting.
    public static func reapChild() -> (pid: Int32, status: ChildStatus)? {
        var status: Int32 = 0
        while true {
            let pid = waitpid(-1, &status, WNOHANG)
            if pid > 0 { return (pid, ChildStatus(raw: status)) }
            if pid < 0 && Errno.current == .interrupted { continue }
            return nil
        }
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
