// Sockets: address resolution, listening (TCP with SO_REUSEPORT, Unix), non-blocking accept and connect.
import Glibc
import CLinux

/// A resolved socket address (IPv4, IPv6 or Unix), stored inline.
public struct SocketAddress: Sendable, CustomStringConvertible {
    public var storage = sockaddr_storage()
    public var length: socklen_t = 0

    public init() {}

    public var family: Int32 { Int32(storage.ss_family) }

    /// `sa` (a sockaddr_in, sockaddr_in6 or sockaddr_un) as the first `length` bytes that count.
    init<S>(copying sa: S, length: Int = MemoryLayout<S>.size) {
        withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sa) { dst.copyMemory(from: $0) } }
        self.length = socklen_t(length)
    }

    public static func unix(path: String) -> SocketAddress? {
        var sun = sockaddr_un()
        sun.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: sun.sun_path)
        if bytes.count >= capacity { return nil }
        withUnsafeMutableBytes(of: &sun.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return SocketAddress(copying: sun, length: MemoryLayout<sa_family_t>.size + bytes.count + 1)
    }

    /// Resolves a numeric or named host (blocking getaddrinfo: call it outside the event loop).
    public static func resolve(host: String, port: Int) throws(SyscallError) -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_socktype = cl_SOCK_STREAM()
        hints.ai_family = AF_UNSPEC
        var res: UnsafeMutablePointer<addrinfo>?
        let h = (host == "*" || host.isEmpty) ? nil : host
        if h == nil { hints.ai_flags = AI_PASSIVE }
        let rc = getaddrinfo(h, String(port), &hints, &res)
        if rc != 0 {
            let msg = String(cString: gai_strerror(rc))
            throw SyscallError("getaddrinfo(\(host)): \(msg)", Errno(rawValue: EINVAL))
        }
        defer { freeaddrinfo(res) }
        var out: [SocketAddress] = []
        var p = res
        while let ai = p {
            var a = SocketAddress()
            withUnsafeMutableBytes(of: &a.storage) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(start: ai.pointee.ai_addr, count: Int(ai.pointee.ai_addrlen)))
            }
            a.length = ai.pointee.ai_addrlen
            out.append(a)
            p = ai.pointee.ai_next
        }
        return out
    }

    /// Parses a numeric IPv4/IPv6 address without any lookup.
    public static func numeric(host: String, port: Int) -> SocketAddress? {
        var sin = sockaddr_in()
        if inet_pton(AF_INET, host, &sin.sin_addr) == 1 {
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = UInt16(port).bigEndian
            return SocketAddress(copying: sin)
        }
        var sin6 = sockaddr_in6()
        guard inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1 else { return nil }
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = UInt16(port).bigEndian
        return SocketAddress(copying: sin6)
    }

    public var description: String {
        var s = storage
        switch family {
        case AF_INET:
            let (host, port) = numeric(sockaddr_in.self, AF_INET, INET_ADDRSTRLEN, \.sin_addr, \.sin_port)
            return "\(host):\(port)"
        case AF_INET6:
            let (host, port) = numeric(sockaddr_in6.self, AF_INET6, INET6_ADDRSTRLEN, \.sin6_addr, \.sin6_port)
            return "[\(host)]:\(port)"
        case AF_UNIX:
            return withUnsafePointer(to: &s) {
                $0.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { sun in
                    withUnsafeBytes(of: sun.pointee.sun_path) { raw in
                        "unix:" + String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                    }
                }
            }
        default:
            return "unknown-address"
        }
    }

    /// The numeric host (inet_ntop) and port of an IPv4 or IPv6 address held as `S`.
    private func numeric<S, A>(_ type: S.Type, _ family: Int32, _ size: Int32, _ address: KeyPath<S, A>,
                               _ port: KeyPath<S, in_port_t>) -> (host: String, port: UInt16) {
        var s = storage
        return withUnsafePointer(to: &s) {
            $0.withMemoryRebound(to: S.self, capacity: 1) { sa in
                var buf = [CChar](repeating: 0, count: Int(size))
                var addr = sa.pointee[keyPath: address]
                inet_ntop(family, &addr, &buf, socklen_t(buf.count))
                return (cStringText(buf), UInt16(bigEndian: sa.pointee[keyPath: port]))
            }
        }
    }

    /// The IP address without port ("127.0.0.1", "::1"), or "unix".
    public var hostString: String {
        let d = description
        if family == AF_UNIX { return "unix" }
        if d.hasPrefix("[") { return String(d.dropFirst().prefix(while: { $0 != "]" })) }
        return String(d.prefix(while: { $0 != ":" }))
    }

    public var port: Int {
        var s = storage
        switch family {
        case AF_INET:
            return withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) } }
        case AF_INET6:
            return withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) } }
        default:
            return 0
        }
    }
}

/// PgBouncer's tcp_keepalive, tcp_keepidle, tcp_keepintvl, tcp_keepcnt (seconds, probes) and
/// tcp_user_timeout (milliseconds); 0 means "the system's default". Made by
/// `Config.tcpKeepaliveSettings` (the memberwise initializer); the worker reads and adjusts it.
public struct TCPKeepalive: Sendable, Equatable {
    public var enabled: Bool
    public var idle: Int32
    public var interval: Int32
    public var count: Int32
    public var userTimeoutMillis: Int32
}

public enum Sockets {
    /// A non-blocking listening TCP socket; with `reusePort` several sockets share the port (one per worker).
    public static func listenTCP(_ address: SocketAddress, reusePort: Bool, backlog: Int32) throws(SyscallError) -> Int32 {
        let fd = socket(address.family, cl_SOCK_STREAM() | cl_SOCK_NONBLOCK() | cl_SOCK_CLOEXEC(), 0)
        if fd < 0 { throw SyscallError("socket", .current) }
        do throws(SyscallError) {
            try setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            if reusePort { try setIntOption(fd, SOL_SOCKET, cl_SO_REUSEPORT(), 1) }
            if address.family == AF_INET6 { try setIntOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
            var a = address
            let r = withUnsafePointer(to: &a.storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, a.length) }
            }
            if r < 0 { throw SyscallError("bind(\(address))", .current) }
            if Glibc.listen(fd, backlog) < 0 { throw SyscallError("listen(\(address))", .current) }
        } catch {
            Posix.close(fd)
            throw error
        }
        return fd
    }

    /// A non-blocking listening Unix socket at `path` (a stale socket file is replaced), with `mode`
    /// and, when given, `group` as its group (PgBouncer's unix_socket_mode and unix_socket_group); both
    /// are set before listen(), so no client connects through a socket with other permissions.
    public static func listenUnix(path: String, mode: mode_t, group: UInt32? = nil, backlog: Int32) throws(SyscallError) -> Int32 {
        guard let address = SocketAddress.unix(path: path) else {
            throw SyscallError("unix socket path too long: \(path)", .invalidArgument)
        }
        let fd = socket(AF_UNIX, cl_SOCK_STREAM() | cl_SOCK_NONBLOCK() | cl_SOCK_CLOEXEC(), 0)
        if fd < 0 { throw SyscallError("socket(AF_UNIX)", .current) }
        unlink(path)
        var a = address
        let r = withUnsafePointer(to: &a.storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, a.length) }
        }
        if r < 0 {
            let e = Errno.current
            Posix.close(fd)
            throw SyscallError("bind(\(path))", e)
        }
        if chmod(path, mode) < 0 {
            let e = Errno.current
            Posix.close(fd)
            throw SyscallError("chmod(\(path))", e)
        }
        if let group, chown(path, uid_t.max, gid_t(group)) < 0 {
            let e = Errno.current
            Posix.close(fd)
            throw SyscallError("chown(\(path), group \(group))", e)
        }
        if Glibc.listen(fd, backlog) < 0 {
            let e = Errno.current
            Posix.close(fd)
            throw SyscallError("listen(\(path))", e)
        }
        return fd
    }

    /// accept4 returning a non-blocking, close-on-exec socket, or nil when the queue is empty.
    @inlinable
    public static func accept(_ listenFD: Int32, peer: inout SocketAddress) throws(SyscallError) -> Int32? {
        while true {
            do throws(SyscallError) {
                let r = try Posix.retrying("accept4", badFDIsBug: false) {
                    peer.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                    return Int(withUnsafeMutablePointer(to: &peer.storage) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            cl_accept4(listenFD, $0, &peer.length, cl_SOCK_NONBLOCK() | cl_SOCK_CLOEXEC())
                        }
                    })
                }
                guard case .processed(let fd) = r else { return nil }
                return Int32(truncatingIfNeeded: fd)
            } catch where error.errno == .connectionAborted {
                continue  // the client gave up while queued: take the next one
            }
        }
    }

    /// Starts a non-blocking connect. Returns the fd and whether the connect already completed.
    /// `keepalive` (TCP only) is set before connecting, as PgBouncer tunes its server sockets; a
    /// failure to set it closes the socket and throws, like a failed connect.
    public static func connect(_ address: SocketAddress, keepalive: TCPKeepalive? = nil) throws(SyscallError)
        -> (fd: Int32, connected: Bool) {
        let fd = socket(address.family, cl_SOCK_STREAM() | cl_SOCK_NONBLOCK() | cl_SOCK_CLOEXEC(), 0)
        if fd < 0 { throw SyscallError("socket", .current) }
        if address.family != AF_UNIX {
            try? setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            if let keepalive {
                do throws(SyscallError) {
                    try setKeepalive(fd, keepalive)
                } catch {
                    Posix.close(fd)
                    throw error
                }
            }
        }
        var a = address
        let r = withUnsafePointer(to: &a.storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, a.length) }
        }
        if r == 0 { return (fd, true) }
        let e = Errno.current
        if e == .inProgress || e == .wouldBlock || e == .interrupted { return (fd, false) }
        Posix.close(fd)
        throw SyscallError("connect(\(address))", e)
    }

    /// The local address a socket is bound to (getsockname); nil when it has none.
    public static func localAddress(_ fd: Int32) -> SocketAddress? {
        address(of: fd, getsockname)
    }

    /// The address `call` (getsockname or getpeername) stores for `fd`; nil when it fails.
    static func address(of fd: Int32, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32)
        -> SocketAddress? {
        var a = SocketAddress()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &a.storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, &len) }
        }
        guard rc == 0 else { return nil }
        a.length = len
        return a
    }

    /// The pending error of a socket (SO_ERROR): 0 once a non-blocking connect succeeded.
    public static func pendingError(_ fd: Int32) -> Errno? {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 { return .current }
        return err == 0 ? nil : Errno(rawValue: err)
    }

    public static func setIntOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws(SyscallError) {
        var v = value
        if setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) < 0 {
            throw SyscallError("setsockopt(\(level), \(name))", .current)
        }
    }

    /// PgBouncer's keepalive settings on one TCP socket (its `tune_socket`): SO_KEEPALIVE on or off;
    /// when on, each of TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT that is not 0; TCP_USER_TIMEOUT when
    /// not 0, whatever the keepalive switch says. A field left at 0 keeps the socket's current value
    /// (the system's default on a new socket).
    public static func setKeepalive(_ fd: Int32, _ k: TCPKeepalive) throws(SyscallError) {
        try setIntOption(fd, SOL_SOCKET, SO_KEEPALIVE, k.enabled ? 1 : 0)
        if k.enabled {
            if k.idle > 0 { try setIntOption(fd, Int32(IPPROTO_TCP), cl_TCP_KEEPIDLE(), k.idle) }
            if k.interval > 0 { try setIntOption(fd, Int32(IPPROTO_TCP), cl_TCP_KEEPINTVL(), k.interval) }
            if k.count > 0 { try setIntOption(fd, Int32(IPPROTO_TCP), cl_TCP_KEEPCNT(), k.count) }
        }
        if k.userTimeoutMillis > 0 {
            try setIntOption(fd, Int32(IPPROTO_TCP), cl_TCP_USER_TIMEOUT(), k.userTimeoutMillis)
        }
    }

    /// The system's defaults for the fields of `k` that are 0 (net.ipv4.tcp_keepalive_time, _intvl,
    /// _probes; TCP_USER_TIMEOUT 0 is its own default). For a socket that outlives a reload (a
    /// listener): setsockopt cannot set a keepalive field back to "unset", only to a value.
    public static func withSystemDefaults(_ k: TCPKeepalive) -> TCPKeepalive {
        func sysctl(_ name: String) -> Int32 {
            guard let bytes = try? Files.readContents("/proc/sys/net/ipv4/" + name, limit: 64) else { return 0 }
            return Int32(String(decoding: bytes.filter { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self)) ?? 0
        }
        var out = k
        if out.idle == 0 { out.idle = sysctl("tcp_keepalive_time") }
        if out.interval == 0 { out.interval = sysctl("tcp_keepalive_intvl") }
        if out.count == 0 { out.count = sysctl("tcp_keepalive_probes") }
        return out
    }

    /// TCP_NODELAY and keepalive for an accepted TCP client socket (failures are harmless).
    public static func tuneTCP(_ fd: Int32, keepalive: TCPKeepalive) {
        try? setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        try? setKeepalive(fd, keepalive)
    }

    /// Whether SO_REUSEPORT is set on a socket (false if it cannot be read).
    public static func reusesPort(_ fd: Int32) -> Bool {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, cl_SO_REUSEPORT(), &v, &len) == 0 && v != 0
    }

    /// The peer's uid of a Unix socket (SO_PEERCRED), for admin access over the socket.
    public static func peerUID(_ fd: Int32) -> UInt32? {
        var uid: UInt32 = 0
        return cl_peer_uid(fd, &uid) == 0 ? uid : nil
    }

    /// The peer's pid of a Unix socket (SO_PEERCRED); connected to a listener, the process that
    /// called listen() on it, even if that process has exited since.
    public static func peerPID(_ fd: Int32) -> Int32? {
        var pid: Int32 = 0
        return cl_peer_pid(fd, &pid) == 0 ? pid : nil
    }

    public static func shutdownWrite(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }
}

/// The text of a NUL-terminated C buffer.
func cStringText(_ buf: [CChar]) -> String {
    String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
