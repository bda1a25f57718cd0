// End to end: PgBouncer's socket settings (keepalive, Unix socket group and mode, so_reuseport) take effect.
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
