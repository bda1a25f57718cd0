// errno as a typed Swift error with named constants, read right after the failing call.
import Glibc
import CLinux

public struct Errno: RawRepresentable, Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    @inlinable public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's errno. Read it immediately after the syscall, before anything else runs.
    @inlinable public static var current: Errno { Errno(rawValue: cl_errno()) }

    public static let interrupted = Errno(rawValue: EINTR)
    public static let wouldBlock = Errno(rawValue: EAGAIN)
    public static let inProgress = Errno(rawValue: EINPROGRESS)
    public static let badFileDescriptor = Errno(rawValue: EBADF)
    public static let badAddress = Errno(rawValue: EFAULT)
    public static let invalidArgument = Errno(rawValue: EINVAL)
    public static let connectionRefused = Errno(rawValue: ECONNREFUSED)
    public static let connectionReset = Errno(rawValue: ECONNRESET)
    public static let connectionAborted = Errno(rawValue: ECONNABORTED)
    public static let brokenPipe = Errno(rawValue: EPIPE)
    public static let addressInUse = Errno(rawValue: EADDRINUSE)
    public static let noSuchFile = Errno(rawValue: ENOENT)
    public static let noChild = Errno(rawValue: ECHILD)
    public static let noSuchProcess = Errno(rawValue: ESRCH)
    public static let tooManyOpenFiles = Errno(rawValue: EMFILE)
    public static let tooManyOpenFilesSystem = Errno(rawValue: ENFILE)
    public static let timedOut = Errno(rawValue: ETIMEDOUT)
    public static let notConnected = Errno(rawValue: ENOTCONN)
    public static let permissionDenied = Errno(rawValue: EACCES)
    public static let notPermitted = Errno(rawValue: EPERM)
    public static let fileTooLarge = Errno(rawValue: EFBIG)
    public static let isADirectory = Errno(rawValue: EISDIR)
    public static let addressFamilyNotSupported = Errno(rawValue: EAFNOSUPPORT)
    public static let addressNotAvailable = Errno(rawValue: EADDRNOTAVAIL)

    public var description: String {
        // strerror is fine here: each process has one thread that logs.
        if let s = strerror(rawValue) { return String(cString: s) }
        return "errno \(rawValue)"
    }
}

/// A failed syscall: which call, and why.
public struct SyscallError: Error, Equatable, Sendable, CustomStringConvertible {
    public var call: String
    public var errno: Errno
    public init(_ call: String, _ errno: Errno) {
        self.call = call
        self.errno = errno
    }
    public var description: String { "\(call): \(errno)" }
}
