// Reading another process's socket options: pidfd_getfd(2) copies its descriptor into the test process.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The keepalive options of one socket, as getsockopt reports them.
struct SocketKeepalive: Equatable, CustomStringConvertible {
    var keepalive: Int32
    var idle: Int32
    var interval: Int32
    var count: Int32
    var userTimeout: Int32

    var description: String {
        "SO_KEEPALIVE=\(keepalive) TCP_KEEPIDLE=\(idle) TCP_KEEPINTVL=\(interval) TCP_KEEPCNT=\(count) TCP_USER_TIMEOUT=\(userTimeout)"
    }
}

enum SocketOptions {
    private typealias PidfdOpen = @convention(c) (pid_t, UInt32) -> Int32
    private typealias PidfdGetfd = @convention(c) (Int32, Int32, UInt32) -> Int32

    /// glibc 2.36's wrappers, looked up at run time (Swift's Glibc module does not declare them).
    private static func function<T>(_ name: String, as type: T.Type) -> T? {
        guard let handle = dlopen(nil, RTLD_NOW), let sym = dlsym(handle, name) else { return nil }
        return unsafeBitCast(sym, to: type)
    }

    /// The options of the TCP socket that `pid` holds for the connection from local port `localPort`
    /// to remote port `remotePort` (as seen by `pid`); nil when it holds no such socket.
    static func keepalive(pid: pid_t, localPort: Int, remotePort: Int) throws -> SocketKeepalive? {
        let inodes = Set(ProcFS.tcpSockets()
            .filter { $0.localPort == localPort && $0.remotePort == remotePort && $0.inode != 0 }.map(\.inode))
        guard !inodes.isEmpty else { return nil }
        let fm = FileManager.default
        var targetFD: Int32?
        for entry in (try? fm.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? [] {
            guard let link = try? fm.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(entry)"),
                  link.hasPrefix("socket:["), let inode = UInt64(link.dropFirst(8).dropLast()),
                  inodes.contains(inode) else { continue }
            targetFD = Int32(entry)
        }
        guard let targetFD else { return nil }
        guard let open = function("pidfd_open", as: PidfdOpen.self),
              let getfd = function("pidfd_getfd", as: PidfdGetfd.self) else {
            throw E2EError("this libc has no pidfd_open/pidfd_getfd")
        }
        let pidfd = open(pid, 0)
        guard pidfd >= 0 else { throw E2EError("pidfd_open(\(pid)): errno \(errno)") }
        defer { close(pidfd) }
        let fd = getfd(pidfd, targetFD, 0)
        guard fd >= 0 else { throw E2EError("pidfd_getfd(\(pid), \(targetFD)): errno \(errno)") }
        defer { close(fd) }
        func option(_ level: Int32, _ name: Int32) -> Int32 {
            var v: Int32 = -1
            var len = socklen_t(MemoryLayout<Int32>.size)
            return getsockopt(fd, level, name, &v, &len) == 0 ? v : -1
        }
        let tcp = Int32(IPPROTO_TCP)
        return SocketKeepalive(keepalive: option(SOL_SOCKET, SO_KEEPALIVE), idle: option(tcp, 4 /* TCP_KEEPIDLE */),
                               interval: option(tcp, 5 /* TCP_KEEPINTVL */), count: option(tcp, 6 /* TCP_KEEPCNT */),
                               userTimeout: option(tcp, 18 /* TCP_USER_TIMEOUT */))
    }
}
