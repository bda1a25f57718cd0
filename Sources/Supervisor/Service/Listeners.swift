// The service's listening sockets: per TCP address one socket shared by every slot (or, with
// so_reuseport, one SO_REUSEPORT socket per slot), one shared Unix socket; opened once at start and
// held until exit, so restarting a worker never closes the port.
import Glibc
import Shared

/// A reason the supervisor cannot start; logged as FATAL, exit status 1.
struct StartupError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

struct Listeners {
    /// TCP addresses; every slot has one socket per address, in this order.
    var addresses: [SocketAddress] = []
    /// tcp[slot][i] listens on addresses[i]. Without so_reuseport every slot holds the same socket
    /// for an address (tcp[0][i] == tcp[1][i]); with it each slot has its own.
    var tcp: [[Int32]] = []
    var unix: Int32 = -1
    var unixPath: String?

    /// The descriptors a worker of `slot` gets, in the order WorkerLaunch.arguments numbers them.
    func fds(forSlot slot: Int) -> [Int32] {
        unix >= 0 ? tcp[slot] + [unix] : tcp[slot]
    }

    var isOpen: Bool { unix >= 0 || tcp.contains { !$0.isEmpty } }

    /// Closes the supervisor's copies. Workers keep theirs until they stop accepting.
    mutating func close() {
        for fd in Set(tcp.flatMap { $0 }) { Posix.close(fd) }
        tcp = []
        if unix >= 0 { Posix.close(unix) }
        unix = -1
    }

    /// `<dir>/.s.PGSQL.<port>` as PostgreSQL and PgBouncer name it; nil when `dir` is empty (no Unix socket).
    static func unixSocketPath(directory: String, port: Int) -> String? {
        if directory.isEmpty { return nil }
        var dir = Substring(directory)
        while dir.count > 1 && dir.hasSuffix("/") { dir = dir.dropLast() }
        return (dir == "/" ? "" : String(dir)) + "/.s.PGSQL.\(port)"
    }

    /// The TCP addresses for `listen_addr`: `*` is every IPv4 and IPv6 address (0.0.0.0 and ::),
    /// names resolve to all their addresses. `wildcard` marks the ones a host without IPv6 may lack.
    static func tcpAddresses(listenAddr: [String], port: Int) throws(StartupError) -> [(address: SocketAddress, wildcard: Bool)] {
        var out: [(address: SocketAddress, wildcard: Bool)] = []
        var seen: Set<String> = []
        func add(_ a: SocketAddress, _ wildcard: Bool) {
            if seen.insert(a.description).inserted { out.append((a, wildcard)) }
        }
        for entry in listenAddr where !entry.isEmpty {
            if entry == "*" {
                if let v4 = SocketAddress.numeric(host: "0.0.0.0", port: port) { add(v4, true) }
                if let v6 = SocketAddress.numeric(host: "::", port: port) { add(v6, true) }
                continue
            }
            do throws(SyscallError) {
                for a in try SocketAddress.resolve(host: entry, port: port) { add(a, false) }
            } catch {
                throw StartupError("cannot resolve listen_addr \(entry): \(error)")
            }
        }
        return out
    }

    /// How long start-up waits for the port while the workers of a crashed predecessor still hold
    /// it: they close their listeners as soon as they see their supervisor is gone (milliseconds;
    /// generous for a loaded machine, and only paid when the port really is someone else's).
    static let orphanWaitNanos: Int64 = 5_000_000_000

    /// Opens everything for `slots` workers. `warn` receives non-fatal problems. `predecessorCrashed`
    /// (a pidfile naming a dead process) lets an "address in use" wait for the old workers to let go.
    ///
    /// `reusePort` is PgBouncer's so_reuseport. Off (the default), each TCP address gets one socket
    /// bound without SO_REUSEPORT and shared by every worker (each registers it with EPOLLEXCLUSIVE,
    /// so one worker wakes per connection): as with PgBouncer, no other process can bind the port
    /// while pgswift holds it. Per-worker SO_REUSEPORT sockets cannot give that: Linux lets any socket
    /// of the same user with SO_REUSEPORT join their group, and clearing the option after listen()
    /// stops the kernel from spreading connections over the group. On, every slot binds its own
    /// SO_REUSEPORT socket: the kernel spreads connections over the workers and over any other process
    /// of the same user that binds the port with SO_REUSEPORT (a second pgswift, or a PgBouncer with
    /// so_reuseport = 1: blue/green hand-over).
    /// `unixSocketGroup` (a group name, "" for none) becomes the Unix socket's group.
    static func open(listenAddr: [String], port: Int, unixSocketDir: String, unixSocketMode: Int,
                     unixSocketGroup: String = "", reusePort: Bool = false,
                     backlog: Int, slots: Int, predecessorCrashed: Bool = false,
                     warn: (String) -> Void) throws(StartupError) -> Listeners {
        var group: UInt32? = nil
        if !unixSocketGroup.isEmpty {
            guard let gid = Posix.groupID(name: unixSocketGroup) else {
                throw StartupError("unix_socket_group: no group named \(unixSocketGroup)")
            }
            group = gid
        }
        var result = Listeners()
        let backlog = Int32(clamping: max(1, backlog))
        var orphans = predecessorCrashed
        // The Unix socket first: who listens there tells whether old workers are still around.
        var unixAddress: (String, SocketAddress)? = nil
        if let path = unixSocketPath(directory: unixSocketDir, port: port) {
            guard let address = SocketAddress.unix(path: path) else {
                throw StartupError("unix socket path too long: \(path)")
            }
            // Listening would unlink the file: make sure it is not a live pooler's socket first. A
            // listener made by a process that is gone belongs to the workers of a crashed pgswift,
            // which stop accepting and drain on their own: replacing the file is what they expect.
            if let (fd, _) = try? Sockets.connect(address) {
                let owner = Sockets.peerPID(fd)
                Posix.close(fd)
                guard let owner, owner > 0, !Posix.processExists(owner) else {
                    throw StartupError("could not listen on \(path): a running process is listening there (another pgswift or PgBouncer?)")
                }
                warn("\(path) was made by pid \(owner), which is gone: workers of a crashed pgswift are still draining; replacing it")
                orphans = true
            }
            unixAddress = (path, address)
        }
        let orphanDeadline = Clock.monotonicNanos() + (orphans ? orphanWaitNanos : 0)
        var perAddress: [[Int32]] = []
        var ok = false
        defer { if !ok { for fd in Set(perAddress.flatMap { $0 }) { Posix.close(fd) } } }
        addresses: for (address, wildcard) in try tcpAddresses(listenAddr: listenAddr, port: port) {
            if reusePort {
                // Join (or start) the port's SO_REUSEPORT group, one socket per slot.
                var slotFDs: [Int32] = []
                for _ in 0..<slots {
                    do throws(SyscallError) {
                        slotFDs.append(try Sockets.listenTCP(address, reusePort: true, backlog: backlog))
                    } catch {
                        for fd in slotFDs { Posix.close(fd) }
                        if slotFDs.isEmpty && wildcard && (error.errno == .addressFamilyNotSupported || error.errno == .addressNotAvailable) {
                            warn("not listening on \(address): \(error.errno) (no IPv6 on this host?)")
                            continue addresses
                        }
                        throw listenError(address.description, error, reusePort: true)
                    }
                }
                result.addresses.append(address)
                perAddress.append(slotFDs)
                continue
            }
            // One socket without SO_REUSEPORT: nobody else can join it.
            var waited = false
            while true {
                do throws(SyscallError) {
                    let fd = try Sockets.listenTCP(address, reusePort: false, backlog: backlog)
                    result.addresses.append(address)
                    perAddress.append(Array(repeating: fd, count: slots))
                    break
                } catch {
                    if wildcard && (error.errno == .addressFamilyNotSupported || error.errno == .addressNotAvailable) {
                        warn("not listening on \(address): \(error.errno) (no IPv6 on this host?)")
                        continue addresses
                    }
                    if error.errno == .addressInUse && Clock.monotonicNanos() < orphanDeadline {
                        if !waited { warn("\(address) still in use: waiting for the old workers to close it") }
                        waited = true
                        Clock.sleep(nanos: 20_000_000)
                        continue
                    }
                    throw listenError(address.description, error, reusePort: false)
                }
            }
        }
        result.tcp = (0..<slots).map { slot in perAddress.map { $0[slot] } }
        if let (path, _) = unixAddress {
            do throws(SyscallError) {
                result.unix = try Sockets.listenUnix(path: path, mode: mode_t(truncatingIfNeeded: unixSocketMode),
                                                     group: group, backlog: backlog)
            } catch {
                throw listenError(path, error, reusePort: false)
            }
            result.unixPath = path
        }
        ok = true
        return result
    }

    private static func listenError(_ what: String, _ error: SyscallError, reusePort: Bool) -> StartupError {
        if error.errno == .addressInUse {
            return StartupError("could not listen on \(what): address already in use ("
                + (reusePort ? "held by a process without so_reuseport, or by another user)" : "another pgswift or PgBouncer?)"))
        }
        return StartupError("could not listen on \(what): \(error)")
    }
}
