// Signals as events: block them, then read them from a signalfd in the same epoll set.
import Glibc
import CLinux

public struct SignalFD: ~Copyable {
    public let fd: Int32

    /// Blocks `signals` for this thread (and, through exec, nothing: spawn clears the mask) and opens a signalfd.
    public init(signals: [Int32]) throws(SyscallError) {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        if pthread_sigmask(SIG_BLOCK, &set, nil) != 0 { throw SyscallError("pthread_sigmask", .current) }
        let fd = signalfd(-1, &set, cl_SFD_NONBLOCK() | cl_SFD_CLOEXEC())
        if fd < 0 { throw SyscallError("signalfd", .current) }
        self.fd = fd
    }

    deinit { Posix.close(fd) }

    /// The next pending signal number, or nil when none is queued.
    public func next() -> Int32? {
        var info = signalfd_siginfo()
        let size = MemoryLayout<signalfd_siginfo>.size
        let r = try? Posix.retrying("read(signalfd)", badFDIsBug: false) { Glibc.read(fd, &info, size) }
        return r == .processed(size) ? Int32(info.ssi_signo) : nil
    }
}

public enum Signals {
    /// Ignores SIGPIPE process-wide: writes to closed sockets report EPIPE instead.
    public static func ignoreSIGPIPE() {
        signal(SIGPIPE, SIG_IGN)
    }

    public static func name(_ s: Int32) -> String {
        switch s {
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        case SIGQUIT: return "SIGQUIT"
        case SIGHUP: return "SIGHUP"
        case SIGUSR1: return "SIGUSR1"
        case SIGUSR2: return "SIGUSR2"
        case SIGCHLD: return "SIGCHLD"
        case SIGKILL: return "SIGKILL"
        case SIGSEGV: return "SIGSEGV"
        case SIGABRT: return "SIGABRT"
        case SIGILL: return "SIGILL"
        case SIGTRAP: return "SIGTRAP"
        case SIGBUS: return "SIGBUS"
        default: return "signal \(s)"
        }
    }
}
