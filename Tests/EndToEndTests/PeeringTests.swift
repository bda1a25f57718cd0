// End to end: PgBouncer-style peering. A cancel that reaches another pooler of the fleet is forwarded
// to the one holding the client, by the peer id in the cancel key.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class PeeringTests: XCTestCase {
    /// Two services on one PostgreSQL, peer ids 1 and 2, each naming both in `[peers]`.
    private func startPair(_ pg: PostgresServer, workers: Int = 2) throws -> (Pgswift, Pgswift) {
        let ports = (try freePort(), try freePort())
        let peers = [(1, "host=127.0.0.1 port=\(ports.0)"), (2, "host=127.0.0.1 port=\(ports.1) pool_size=3")]
        func settings(_ id: Int, _ port: Int) throws -> PgswiftSettings {
            var s = try TxFixtures.settings(pg, workers: workers, poolSize: 4)
            s.port = port
            s.settings += [("peer_id", String(id)), ("admin_users", "u_trust")]
            s.peers = peers
            return s
        }
        let px1 = try Pgswift.start(try settings(1, ports.0))
        do {
            return (px1, try Pgswift.start(try settings(2, ports.1)))
        } catch {
            px1.stop()
            throw error
        }
    }

    private func sendCancel(port: Int, processID: UInt32, secretKey: UInt32) throws {
        let s = try TestSocket(port: port)
        try s.send(WireEncode.int32(16) + WireEncode.int32(80_877_102) + WireEncode.int32(processID)
                   + WireEncode.int32(secretKey))
        _ = s.readUntilClosed(timeout: 10)
    }

    private func admin(_ px: Pgswift, _ sql: String) throws -> [[String?]] {
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { c.close() }
        return try c.query(sql)
    }

    /// A client of service 1 runs pg_sleep(30); its CancelRequest sent to service 2 is forwarded to
    /// service 1 (peer id 1 in the key) and cancels the query. The key carries the peer id where
    /// PgBouncer reads it; cancels between the workers of one service still work; a key naming a
    /// peer nobody configured is dropped with a log line and cancels nothing.
    func testCancelSentToThePeerCancelsTheQuery() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        let (px1, px2) = try startPair(pg)
        defer {
            px1.stop()
            px2.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let client = try KeyedClient(port: px1.port, user: TxFixtures.role, database: "testdb")
        XCTAssertEqual((client.processID >> 16) & 0xFF | ((client.processID >> 8) & 0xFF) << 8, 1,
                       "peer id in bytes 1-2 of the key, low byte first")
        XCTAssertEqual(client.secretKey & 3, 3, "TTL bits set")

        // Through the other service.
        try client.socket.send(WireEncode.query("select pg_sleep(30), 'peer-cancel-1'"))
        XCTAssertTrue(CancelTests.waitUntilRunning(pg, tag: "peer-cancel-1"), "the query never started")
        let started = monotonicNow()
        try sendCancel(port: px2.port, processID: client.processID, secretKey: client.secretKey)
        let answer = try client.readUntilReady(timeout: 10)
        XCTAssertEqual(answer?.sqlstate, "57014", "cancel through the peer: \(answer.map { "\($0)" } ?? "no error")\n"
                       + "service 2:\n\(px2.log().suffix(3000))\nservice 1:\n\(px1.log().suffix(3000))")
        print("cancel forwarded by the peer: \(String(format: "%.3f", monotonicNow() - started)) s")
        let pools = try admin(px2, "SHOW PEER_POOLS")
        XCTAssertEqual(pools.first?.first ?? nil, "1", "service 2 made a pool for peer 1: \(pools)")
        XCTAssertEqual(pools.count, 1, "\(pools)")
        let peers = try admin(px2, "SHOW PEERS")
        XCTAssertEqual(peers.map { $0.map { $0 ?? "" } },
                       [["1", "127.0.0.1", String(px1.port), "4"], ["2", "127.0.0.1", String(px2.port), "3"]])

        // Between the workers of service 1: from the worker that does not hold the client.
        let workers = px1.workerPids()
        XCTAssertEqual(workers.count, 2)
        guard let owner = CancelTests.waitForOwner(of: client.socket, port: px1.port, workers: workers) else {
            return XCTFail("cannot tell which worker holds the client connection")
        }
        try client.socket.send(WireEncode.query("select pg_sleep(30), 'peer-cancel-2'"))
        XCTAssertTrue(CancelTests.waitUntilRunning(pg, tag: "peer-cancel-2"), "the second query never started")
        _ = try CancelTests.sendCancel(port: px1.port, workers: workers, from: { $0 != owner },
                                       processID: client.processID, secretKey: client.secretKey)
        let second = try client.readUntilReady(timeout: 10)
        XCTAssertEqual(second?.sqlstate, "57014", "cross-worker cancel with peering: \(px1.log().suffix(3000))")

        // A key with peer id 9, which no [peers] names: dropped, logged, nothing cancelled.
        try client.socket.send(WireEncode.query("select pg_sleep(30), 'peer-cancel-3'"))
        XCTAssertTrue(CancelTests.waitUntilRunning(pg, tag: "peer-cancel-3"), "the third query never started")
        let unknown = client.processID & 0xFF00_00FF | 9 << 16
        try sendCancel(port: px2.port, processID: unknown, secretKey: client.secretKey)
        XCTAssertTrue(waitUntil(timeout: 10) { !px2.logLines(containing: "cancel request for unknown peer 9 dropped").isEmpty },
                      px2.log().suffix(2000).description)
        XCTAssertTrue(CancelTests.waitUntilRunning(pg, tag: "peer-cancel-3", timeout: 1), "the unknown-peer cancel hit the query")
        try sendCancel(port: px2.port, processID: client.processID, secretKey: client.secretKey)
        XCTAssertEqual(try client.readUntilReady(timeout: 10)?.sqlstate, "57014")
        XCTAssertTrue(px1.isRunning && px2.isRunning)
    }

    /// A fleet mixing pgswift and PgBouncer: PgBouncer (1.21 or later: the key layout pgswift speaks)
    /// with peer id 3 beside a pgswift with peer id 1. A cancel for pgswift's client sent to
    /// PgBouncer, and one for PgBouncer's client sent to pgswift, each reach the right pooler.
    func testCancelAcrossPgBouncerAndPgswift() throws {
        let binary = "/usr/sbin/pgbouncer"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw XCTSkip("\(binary) is not installed: the mixed pgswift/PgBouncer fleet is not tested")
        }
        let versionText = try runCommand([binary, "--version"]).stdout
        let version = versionText.split(separator: "\n").first.map(String.init) ?? versionText
        let numbers = version.split(separator: " ").last?.split(separator: ".").compactMap { Int($0) } ?? []
        guard numbers.count >= 2, numbers[0] > 1 || numbers[1] >= 21 else {
            throw XCTSkip("\(binary) is \(version): peering came in PgBouncer 1.19, and the cancel key layout "
                          + "pgswift shares (peer id in bytes 1-2, TTL in byte 7) in 1.21")
        }
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        let ports = (try freePort(), try freePort())
        let peers = [(1, "host=127.0.0.1 port=\(ports.0)"), (3, "host=127.0.0.1 port=\(ports.1)")]
        var s = try TxFixtures.settings(pg, workers: 2, poolSize: 4)
        s.port = ports.0
        s.settings.append(("peer_id", "1"))
        s.peers = peers
        let px = try Pgswift.start(s)
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let dir = try makeTempDirectory(prefix: "pgb")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        chmod(dir, 0o777)
        let ini = """
            [databases]
            testdb = \(pg.connectionString(dbname: "testdb"))
            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = \(ports.1)
            unix_socket_dir =
            auth_type = trust
            auth_file = \(dir)/userlist.txt
            pool_mode = transaction
            logfile = \(dir)/pgbouncer.log
            peer_id = 3
            [peers]
            \(peers.map { "\($0.0) = \($0.1)" }.joined(separator: "\n"))

            """
        try ini.write(toFile: "\(dir)/pgbouncer.ini", atomically: false, encoding: .utf8)
        try "\"\(TxFixtures.role)\" \"\"\n".write(toFile: "\(dir)/userlist.txt", atomically: false, encoding: .utf8)
        // PgBouncer refuses to run as root.
        let argv = getuid() == 0 ? [binary, "-u", "postgres", "\(dir)/pgbouncer.ini"] : [binary, "\(dir)/pgbouncer.ini"]
        let pgb = try ChildProcess.spawn(argv, stdoutPath: "\(dir)/out", stderrPath: "\(dir)/err")
        defer { _ = pgb.terminate(SIGINT, grace: 5) }
        XCTAssertTrue(waitUntil(timeout: 30) { TestSocket.canConnect(port: ports.1) },
                      "PgBouncer did not start: \(readTextFile("\(dir)/err"))")

        for (holder, other, name) in [(px.port, ports.1, "pgswift's client, cancel via PgBouncer"),
                                      (ports.1, px.port, "PgBouncer's client, cancel via pgswift")] {
            let client = try KeyedClient(port: holder, user: TxFixtures.role, database: "testdb")
            let tag = "mixed-\(holder)"
            try client.socket.send(WireEncode.query("select pg_sleep(30), '\(tag)'"))
            XCTAssertTrue(CancelTests.waitUntilRunning(pg, tag: tag), "\(name): the query never started")
            try sendCancel(port: other, processID: client.processID, secretKey: client.secretKey)
            XCTAssertEqual(try client.readUntilReady(timeout: 10)?.sqlstate, "57014",
                           "\(name)\npgswift:\n\(px.log().suffix(2000))\nPgBouncer:\n\(readTextFile("\(dir)/pgbouncer.log"))")
        }
    }
}
