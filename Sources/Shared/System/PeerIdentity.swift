// Who is on the other end of an accepted socket: its address (getpeername) and a Unix user's name; group ids.
import Glibc

extension Sockets {
    /// The peer address of a connected socket; nil if the socket is no longer connected.
    public static func peerAddress(_ fd: Int32) -> SocketAddress? {
        address(of: fd, getpeername)
    }
}

extension Posix {
    /// The login name of a uid (getpwuid_r). It may consult NSS (files, LDAP...): called only for
    /// peer authentication, as PgBouncer does.
    public static func userName(uid: UInt32) -> String? {
        var pw = passwd()
        var result: UnsafeMutablePointer<passwd>? = nil
        return withLookupBuffer { b in
            let rc = getpwuid_r(uid_t(uid), &pw, b.baseAddress!, b.count, &result)
            // pw's strings point into the buffer: read the name while it is pinned.
            guard rc == 0, result != nil, let n = pw.pw_name else { return (rc, nil) }
            return (rc, String(cString: n))
        }
    }

    /// The id of a group name (getgrnam_r), for unix_socket_group; nil when there is no such group.
    public static func groupID(name: String) -> UInt32? {
        var gr = group()
        var result: UnsafeMutablePointer<group>? = nil
        return withLookupBuffer { b in
            let rc = getgrnam_r(name, &gr, b.baseAddress!, b.count, &result)
            return (rc, rc == 0 && result != nil ? UInt32(gr.gr_gid) : nil)
        }
    }

    /// Runs a reentrant NSS lookup (`get*_r`) with a scratch buffer for its strings, four times larger
    /// after each ERANGE up to 1 MiB; `lookup` returns the call's result code and what it read.
    private static func withLookupBuffer<T>(_ lookup: (UnsafeMutableBufferPointer<CChar>) -> (Int32, T?)) -> T? {
        var size = 1024
        while size <= 1 << 20 {
            var buf = [CChar](repeating: 0, count: size)
            let (rc, value) = buf.withUnsafeMutableBufferPointer { lookup($0) }
            if rc == ERANGE {
                size *= 4
                continue
            }
            return value
        }
        return nil
    }
}
