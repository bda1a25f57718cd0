// End to end: PgBouncer's socket settings (keepalive, Unix socket group and mode, so_reuseport, listen_backlog)
// take effect.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class SocketOptionsTests: XCTestCase {
    private var sessions = 0

    /// The worker's socket options on both sides of one session: the accepted client socket (inherited
    /// from the listener) and the server socket pgswift connected to PostgreSQL. Each session uses a
    /// database name of its own (the `*` entry), so its server connection is new, made by the
    /// settings in force now.
    private func sides(_ px: Pgswift, _ postgres: PostgresServer) throws
        -> (client: SocketKeepalive?, server: SocketKeepalive?, log: String) {
        sessions += 1
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "ka\(sessions)")
        defer { c.close() }
        // The port pgswift's server connection uses, as PostgreSQL sees it.
        let serverSidePort = Int(try c.query("select inet_client_port()").first?.first??.description ?? "") ?? 0
        let clientPort = c.socket.localPort
        guard let worker = ProcFS.owner(ofConnectionFrom: clientPort, to: px.port, among: px.workerPids()) else {
            throw E2EError("no worker holds the connection from port \(clientPort)")
        }
        let client = try SocketOptions.keepalive(pid: worker, localPort: px.port, remotePort: clientPort)
        let server = try SocketOptions.keepalive(pid: worker, localPort: serverSidePort, remotePort: postgres.port)
        return (client, server, "worker \(worker), client port \(clientPort), server-side port \(serverSidePort)")
    }

    private static func sysctl(_ name: String) -> Int32 {
        Int32(readTextFile("/proc/sys/net/ipv4/" + name).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// tcp_keepalive, tcp_keepidle, tcp_keepintvl, tcp_keepcnt and tcp_user_timeout on client sockets
    /// (set on the listeners, inherited by accepted sockets) and on server sockets; a reload that
    /// clears tcp_keepidle gives new sockets the system's default again, and tcp_keepalive = 0 turns
    /// keepalive off on both sides.
    func testKeepaliveSettingsReachClientAndServerSockets() throws {
        let postgres = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: postgres)
        s.databases.append(("*", postgres.connectionString(dbname: "testdb")))
        s.settings = [("tcp_keepalive", "1"), ("tcp_keepidle", "37"), ("tcp_keepintvl", "11"),
                      ("tcp_keepcnt", "5"), ("tcp_user_timeout", "4321")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let wanted = SocketKeepalive(keepalive: 1, idle: 37, interval: 11, count: 5, userTimeout: 4321)
        let first = try sides(px, postgres)
        XCTAssertEqual(first.client, wanted, "client socket (\(first.log))")
        XCTAssertEqual(first.server, wanted, "server socket (\(first.log))")

        // Reload: keepidle back to unset, keepalive kept; then keepalive off.
        var text = readTextFile(px.configPath)
        text = text.replacingOccurrences(of: "tcp_keepidle = 37", with: "tcp_keepidle = 0")
        try text.write(toFile: px.configPath, atomically: true, encoding: .utf8)
        px.signal(SIGHUP)
        let defaultIdle = Self.sysctl("tcp_keepalive_time")
        var last: (client: SocketKeepalive?, server: SocketKeepalive?, log: String)?
        XCTAssertTrue(try waitUntil(timeout: 30, poll: 0.2) {
            // Each worker reloads on its own: several sessions in a row, to land on both.
            for _ in 0..<4 {
                last = try sides(px, postgres)
                if last?.client?.idle != defaultIdle || last?.server?.idle != defaultIdle { return false }
            }
            return true
        }, "after the reload, keepidle should be the system's \(defaultIdle): \(String(describing: last))\n\(px.log().suffix(2000))")
        XCTAssertEqual(last?.client?.interval, 11)

        text = text.replacingOccurrences(of: "tcp_keepalive = 1", with: "tcp_keepalive = 0")
        try text.write(toFile: px.configPath, atomically: true, encoding: .utf8)
        px.signal(SIGHUP)
        XCTAssertTrue(try waitUntil(timeout: 30, poll: 0.2) {
            for _ in 0..<4 {
                last = try sides(px, postgres)
                if last?.client?.keepalive != 0 || last?.server?.keepalive != 0 { return false }
            }
            return true
        }, "tcp_keepalive = 0 turns SO_KEEPALIVE off: \(String(describing: last))\n\(px.log().suffix(2000))")
        // tcp_user_timeout does not depend on the keepalive switch (as in PgBouncer).
        XCTAssertEqual(last?.client?.userTimeout, 4321)
        XCTAssertEqual(last?.server?.userTimeout, 4321)
    }
}

extension SocketOptionsTests {
    /// unix_socket_mode and unix_socket_group on the Unix socket; clients connect through it; an
    /// unknown group stops the start with a line naming it.
    func testUnixSocketModeAndGroup() throws {
        let postgres = try PostgresServer.shared()
        guard let nogroup = getgrnam("nogroup")?.pointee.gr_gid else { throw XCTSkip("no group 'nogroup' here") }
        var s = PgswiftSettings(postgres: postgres)
        s.settings = [("unix_socket_mode", "0660"), ("unix_socket_group", "nogroup")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let path = "\(px.dir)/.s.PGSQL.\(px.port)"
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0, path)
        XCTAssertEqual(st.st_mode & 0o7777, 0o660, "mode of \(path)")
        XCTAssertEqual(st.st_gid, nogroup, "group of \(path)")
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFSOCK)
        let r = try runCommand([try PostgresTools.path("psql"), "host=\(px.dir) port=\(px.port) dbname=testdb user=u_trust",
                                "-XAtq", "-c", "select 42"], timeout: 60)
        XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "42", "\(r)")

        var bad = PgswiftSettings(postgres: postgres)
        bad.settings = [("unix_socket_group", "no_such_group_pgswift")]
        let refused = try Pgswift.launch(ini: bad.render(port: 0, dir: "{{DIR}}")
            .replacingOccurrences(of: "listen_port = 0", with: "listen_port = {{PORT}}"), userlist: bad.renderUserlist())
        defer { refused.stop() }
        XCTAssertEqual(refused.waitForExit(timeout: 30), 1, refused.log())
        XCTAssertTrue(refused.log().contains("unix_socket_group: no group named no_such_group_pgswift"), refused.log())
    }

    /// Binds 127.0.0.1:port with SO_REUSEPORT from this process (as a PgBouncer with so_reuseport = 1
    /// would, same user); the errno, or 0 when it bound.
    private func bindWithReuseport(port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in.loopback(port: port)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { return errno }
        return listen(fd, 1) == 0 ? 0 : errno
    }

    /// so_reuseport = 0 (default): the port is pgswift's alone, as PgBouncer's is: a second pgswift
    /// (either setting) fails to start with "address already in use", and a foreign SO_REUSEPORT socket
    /// of the same user cannot join.
    func testWithoutReuseportThePortIsExclusive() throws {
        let postgres = try PostgresServer.shared()
        let first = try Pgswift.start(PgswiftSettings(postgres: postgres))
        defer { first.stop() }
        XCTAssertEqual(bindWithReuseport(port: first.port), EADDRINUSE, "a same-user SO_REUSEPORT bind must be refused")
        for reuse in ["0", "1"] {
            var s = PgswiftSettings(postgres: postgres)
            s.settings = [("so_reuseport", reuse)]
            let second = try Pgswift.launch(ini: s.render(port: first.port, dir: "{{DIR}}"), userlist: s.renderUserlist(),
                                            port: first.port)
            defer { second.stop() }
            XCTAssertEqual(second.waitForExit(timeout: 30), 1, "so_reuseport = \(reuse): \(second.log())")
            XCTAssertTrue(second.log().contains("could not listen on 127.0.0.1:\(first.port): address already in use"),
                          "so_reuseport = \(reuse): \(second.log())")
        }
        // The first one still serves, and sessions opened one at a time on a quiet service go round
        // its workers (takeTurnOnSharedListener), not all to the first one woken.
        var perWorker: [pid_t: Int] = [:]
        var sessions: [WireClient] = []
        defer { sessions.forEach { $0.close() } }
        for i in 0..<20 {
            let c = try WireClient.connect(port: first.port, user: "u_trust", database: "testdb")
            XCTAssertEqual(try c.query("select \(i)"), [[String(i)]])
            sessions.append(c)
            if let w = ProcFS.owner(ofConnectionFrom: c.socket.localPort, to: first.port, among: first.workerPids()) {
                perWorker[w, default: 0] += 1
            }
        }
        XCTAssertEqual(perWorker.count, 2, "\(perWorker)")
        XCTAssertGreaterThanOrEqual(perWorker.values.min() ?? 0, 5, "20 sessions over 2 workers: \(perWorker)")
    }

    /// so_reuseport = 1: two pgswift services share one port and the kernel gives connections to
    /// both; stopping one leaves the other serving (blue/green hand-over).
    func testWithReuseportTwoServicesShareThePort() throws {
        let postgres = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: postgres)
        s.settings = [("so_reuseport", "1")]
        let blue = try Pgswift.start(s)
        defer { blue.stop() }
        let green = try Pgswift.launch(ini: s.render(port: blue.port, dir: "{{DIR}}"), userlist: s.renderUserlist(),
                                       workers: s.workers, port: blue.port)
        defer { green.stop() }
        var probe = s.probe
        probe?.port = blue.port
        try green.waitUntilReady(probe: probe)
        // Connections land on both services' workers.
        var seen: Set<String> = []
        XCTAssertTrue(try waitUntil(timeout: 60, poll: 0) {
            let c = try WireClient.connect(port: blue.port, user: "u_trust", database: "testdb")
            defer { c.close() }
            _ = try c.query("select 1")
            let port = c.socket.localPort
            if ProcFS.owner(ofConnectionFrom: port, to: blue.port, among: blue.workerPids()) != nil { seen.insert("blue") }
            if ProcFS.owner(ofConnectionFrom: port, to: blue.port, among: green.workerPids()) != nil { seen.insert("green") }
            return seen.count == 2
        }, "connections reached only \(seen)")
        // Blue goes; green keeps serving the port.
        blue.stop()
        for _ in 0..<20 {
            let c = try WireClient.connect(port: green.port, user: "u_trust", database: "testdb")
            XCTAssertEqual(try c.query("select 7"), [["7"]])
            c.close()
        }
    }

    /// The listen(2) backlogs `ss` shows for the listening sockets `args` select: a socket in LISTEN
    /// state shows its backlog as Send-Q (the column after Recv-Q).
    private func listenBacklogs(_ args: [String]) throws -> [Int] {
        let r = try runCommand(["ss", "-H"] + args)
        XCTAssertTrue(r.succeeded, "\(r)")
        return r.stdout.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let at = f.firstIndex(of: "LISTEN"), at + 2 < f.count else { return nil }
            return Int(f[at + 2])
        }
    }

    /// listen_backlog is the backlog of every listening socket pgswift opens: the TCP socket the
    /// workers share (so_reuseport = 0) or each worker's own (so_reuseport = 1), and the Unix socket.
    /// The default would be 128.
    func testListenBacklogSizesEveryListeningSocket() throws {
        let postgres = try PostgresServer.shared()
        for reuse in ["0", "1"] {
            var s = PgswiftSettings(postgres: postgres)
            s.workers = 2
            s.settings = [("listen_backlog", "37"), ("so_reuseport", reuse)]
            let px = try Pgswift.start(s)
            defer { px.stop() }
            XCTAssertEqual(try listenBacklogs(["-ltn", "sport = :\(px.port)"]), reuse == "1" ? [37, 37] : [37],
                           "so_reuseport = \(reuse)")
            XCTAssertEqual(try listenBacklogs(["-lx", "src", "\(px.dir)/.s.PGSQL.\(px.port)"]), [37],
                           "so_reuseport = \(reuse): the Unix socket")
        }
    }
}
