// End to end: the admin console's inspection commands against real connections: SHOW FDS, SOCKETS,
// ACTIVE_SOCKETS and MEM, connection ids across workers, the console in SHOW STATS/TOTALS, SHOW USERS'
// configured users, and log_stats' periodic line.
import Foundation
import XCTest
import Shared
#if canImport(Glibc)
import Glibc
#endif

final class AdminShowTests: XCTestCase {
    private func settings(_ pg: PostgresServer, workers: Int, poolMode: String = "session") -> PgswiftSettings {
        var s = PgswiftSettings(postgres: pg)
        s.workers = workers
        s.poolMode = poolMode
        s.settings = [("admin_users", "u_trust")]
        return s
    }

    private func admin(_ px: Pgswift) throws -> WireClient {
        try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
    }

    /// The inode of the socket a process holds as descriptor `fd` (nil: no such socket).
    private func socketInode(pid: pid_t, fd: Int) -> UInt64? {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
              target.hasPrefix("socket:["), target.hasSuffix("]") else { return nil }
        return UInt64(target.dropFirst(8).dropLast())
    }

    /// SHOW FDS lists the listeners (the supervisor's sockets), a connected client with the fd its
    /// worker holds and the server it uses (each the other's link, the server's cancel key carrying the
    /// backend's pid); SHOW SOCKETS has one row per client and server, the admin console included;
    /// ACTIVE_SOCKETS shows a client whose message is half sent; SHOW MEM counts the tables.
    func testShowFdsSocketsActiveSocketsAndMemShowRealConnections() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(settings(pg, workers: 2))
        defer { px.stop() }
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { c.close() }
        let backendPid = try XCTUnwrap(c.query("select pg_backend_pid()").first?.first ?? nil)
        let a = try admin(px)
        defer { a.close() }

        let fds = try a.show("SHOW FDS")
        XCTAssertEqual(fds.columns, AdminColumns.fds.map(\.name))
        func rows(_ answer: AdminAnswer, where column: String, is value: String) -> [[String: String?]] {
            let i = answer.columns.firstIndex(of: column)!
            return answer.rows.filter { $0[i] == value }.map { Dictionary(uniqueKeysWithValues: zip(answer.columns, $0)) }
        }
        // The listeners: 127.0.0.1 and the Unix socket, held by the supervisor.
        let poolers = rows(fds, where: "task", is: "pooler")
        XCTAssertEqual(Set(poolers.map { ($0["addr"] ?? nil) ?? "" }), ["127.0.0.1", "unix"], "\(fds.rows)")
        for p in poolers {
            XCTAssertEqual(p["port"] ?? nil, String(px.port))
            XCTAssertNotNil(socketInode(pid: px.supervisorPid, fd: Int((p["fd"] ?? nil) ?? "") ?? -1), "\(p)")
        }
        // The client: its fd is the accepted end of our connection in the worker that holds it.
        let client = try XCTUnwrap(rows(fds, where: "port", is: String(c.socket.localPort)).first, "\(fds.rows)")
        XCTAssertEqual(client["task"] ?? nil, "client")
        XCTAssertEqual(client["user"] ?? nil, "u_trust")
        XCTAssertEqual(client["database"] ?? nil, "testdb")
        let clientFD = try XCTUnwrap(Int((client["fd"] ?? nil) ?? ""))
        let owner = try XCTUnwrap(ProcFS.owner(ofConnectionFrom: c.socket.localPort, to: px.port, among: px.workerPids()))
        let inodes = Set(ProcFS.tcpSockets().filter { $0.localPort == px.port && $0.remotePort == c.socket.localPort }.map(\.inode))
        XCTAssertTrue(inodes.contains(socketInode(pid: owner, fd: clientFD) ?? 0), "fd \(clientFD) of worker \(owner)")
        // Its server (the backend's pid in its cancel key): linked both ways, PostgreSQL's address.
        let server = try XCTUnwrap(rows(fds, where: "task", is: "server").first {
            (UInt64(($0["cancel"] ?? nil) ?? "") ?? 0) >> 32 == UInt64(backendPid)
        }, "\(fds.rows)")
        XCTAssertEqual(server["fd"] ?? nil, client["link"] ?? nil)
        XCTAssertEqual(server["link"] ?? nil, String(clientFD))
        XCTAssertEqual(server["port"] ?? nil, String(pg.port))
        XCTAssertEqual(server["std_strings"] ?? nil, "on", "the session parameters PostgreSQL reported")
        XCTAssertNil(server["password"] ?? nil)
        XCTAssertTrue(rows(fds, where: "database", is: "pgbouncer").isEmpty, "the admin console is not listed")

        // SHOW SOCKETS: every client (the console too) and server, with PgBouncer's list names.
        let sockets = try a.show("SHOW SOCKETS")
        XCTAssertEqual(sockets.columns, AdminColumns.sockets.map(\.name))
        let clients = try a.show("SHOW CLIENTS"), servers = try a.show("SHOW SERVERS")
        XCTAssertEqual(sockets.rows.count, clients.rows.count + servers.rows.count, "\(sockets.rows)")
        XCTAssertEqual(rows(sockets, where: "port", is: String(c.socket.localPort)).first?["state"] ?? nil, "cl_active")
        XCTAssertEqual(rows(sockets, where: "remote_pid", is: backendPid).first?["state"] ?? nil, "sv_active")
        XCTAssertEqual(rows(sockets, where: "database", is: "pgbouncer").count, 1)

        // ACTIVE_SOCKETS: a client that sent half a query has bytes in flight.
        let half = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { half.close() }
        try half.socket.send([UInt8(ascii: "Q"), 0, 0, 3, 232] + Array("select".utf8))
        var active = AdminAnswer(columns: [], rows: [])
        XCTAssertTrue(try waitUntil(timeout: 10) {
            active = try a.show("SHOW ACTIVE_SOCKETS")
            return !rows(active, where: "port", is: String(half.socket.localPort)).isEmpty
        }, "\(active.rows)")
        XCTAssertEqual(active.columns, AdminColumns.activeSockets.map(\.name))
        let row = rows(active, where: "port", is: String(half.socket.localPort))[0]
        let n = { (k: String) in Int((row[k] ?? nil) ?? "") ?? -1 }
        XCTAssertTrue(n("pkt_remain") > 0 || n("recv_pos") > n("send_pos"), "\(row)")
        XCTAssertEqual(n("pkt_avail"), n("recv_pos") - n("pkt_pos"))
        XCTAssertEqual(n("send_avail"), n("pkt_pos") - n("send_pos"))
        for r in active.rows.map({ Dictionary(uniqueKeysWithValues: zip(active.columns, $0)) }) {
            let v = { (k: String) in Int((r[k] ?? nil) ?? "") ?? -1 }
            XCTAssertFalse(v("recv_pos") == v("send_pos") && v("pkt_remain") == 0 && v("send_remain") == 0, "\(r)")
        }

        // SHOW MEM: pgswift's tables and buffer pool, summed over both workers.
        let mem = try a.show("SHOW MEM")
        XCTAssertEqual(mem.columns, ["name", "size", "used", "free", "memtotal"])
        XCTAssertEqual(mem.column("name"), ["client_cache", "server_cache", "pool_cache", "iobuf_cache"])
        for r in mem.rows {
            let v = r.dropFirst().map { Int($0 ?? "") ?? -1 }
            XCTAssertGreaterThan(v[0], 0, "\(r)")
            XCTAssertEqual(v[3], (v[1] + v[2]) * v[0], "memtotal = (used + free) * size: \(r)")
        }
        XCTAssertGreaterThanOrEqual(Int(mem.rows[0][2] ?? "") ?? 0, 3, "the console and two clients")
        XCTAssertGreaterThanOrEqual(Int(mem.rows[1][2] ?? "") ?? 0, 1)
        XCTAssertTrue(px.isRunning)
    }

    /// PgBouncer's ids are one counter for clients and servers: the admin connections of test_client_id
    /// and the client-then-server pairs of test_socket_id get consecutive ids, whichever worker they
    /// land on. With server_lifetime = 0 each server serves one client and closes, as PgBouncer's does.
    func testConnectionIdsAreOneSequenceAcrossWorkers() throws {
        let pg = try PostgresServer.shared()
        var s = settings(pg, workers: 2)
        s.settings.append(("server_lifetime", "0"))
        let px = try Pgswift.start(s)
        defer { px.stop() }
        var admins: [WireClient] = []
        defer { admins.forEach { $0.close() } }
        var ids: [Int] = []
        for _ in 0..<8 {
            let a = try admin(px)
            admins.append(a)
            let mine = try a.show("SHOW CLIENTS")
            let portCol = mine.columns.firstIndex(of: "port")!, idCol = mine.columns.firstIndex(of: "id")!
            let row = try XCTUnwrap(mine.rows.first { $0[portCol] == String(a.socket.localPort) })
            ids.append(Int(row[idCol] ?? "") ?? -1)
        }
        XCTAssertEqual(ids, Array(ids[0]..<ids[0] + 8), "consecutive ids")
        let owners = Set(admins.compactMap { ProcFS.owner(ofConnectionFrom: $0.socket.localPort, to: px.port, among: px.workerPids()) })
        XCTAssertEqual(owners.count, 2, "all admin connections landed on one worker: the test proves less")

        // A client, then the server it opens: the next two ids (session mode keeps the server linked).
        // Used once, the server closes with its client: the next pair has the next two ids.
        var last = ids[7]
        for round in 0..<3 {
            let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
            let backendPid = try XCTUnwrap(c.query("select pg_backend_pid()").first?.first ?? nil)
            let sockets = try admins[0].show("SHOW SOCKETS")
            XCTAssertEqual(sockets.rows.count, 8 + 2, "round \(round): \(sockets.rows)")
            func id(where column: String, is value: String) -> Int? {
                let k = sockets.columns.firstIndex(of: column)!, i = sockets.columns.firstIndex(of: "id")!
                return sockets.rows.first { $0[k] == value }.flatMap { Int($0[i] ?? "") }
            }
            let clientID = try XCTUnwrap(id(where: "port", is: String(c.socket.localPort)))
            XCTAssertEqual(clientID, last + 1, "round \(round)")
            XCTAssertEqual(id(where: "remote_pid", is: backendPid), clientID + 1, "round \(round)")
            last = clientID + 1
            c.close()
            var servers = -1
            XCTAssertTrue(waitUntil(timeout: 10) {
                servers = (try? admins[0].show("SHOW SERVERS").rows.count) ?? -1
                return servers == 0
            }, "round \(round): \(servers) servers left after their one client")
        }
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { c.close() }
        _ = try c.query("select 1")
        let clients = try admins[0].show("SHOW CLIENTS")
        let portCol = clients.columns.firstIndex(of: "port")!, idCol = clients.columns.firstIndex(of: "id")!
        let clientID = try XCTUnwrap(clients.rows.first { $0[portCol] == String(c.socket.localPort) }.flatMap { Int($0[idCol] ?? "") })
        // KILL_CLIENT takes that id on whichever worker holds the client.
        _ = try admins[0].show("KILL_CLIENT \(clientID)")
        XCTAssertThrowsError(try c.query("select 1"))
        XCTAssertThrowsError(try admins[1].show("KILL_CLIENT \(clientID)")) { e in
            XCTAssertEqual((e as? WireServerError)?.fields.message, "client not found")
        }
    }

    /// As PgBouncer counts its admin pool: each console connection's first query is one query and one
    /// transaction of database `pgbouncer`, in SHOW STATS and SHOW TOTALS. SHOW USERS lists auth_file's
    /// users and `pgbouncer` before they connect.
    func testConsoleCountsInStatsAndUsersListsAuthFile() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(settings(pg, workers: 2))
        defer { px.stop() }
        let first = try admin(px)
        defer { first.close() }
        for _ in 0..<3 { _ = try first.show("SHOW VERSION") }
        for _ in 0..<3 {
            let a = try admin(px)
            _ = try a.show("SHOW STATE")
            a.close()
        }
        let stats = try first.show("SHOW STATS")
        XCTAssertEqual(stats.sum("total_xact_count", where: "database", is: "pgbouncer"), 4, "\(stats.rows)")
        XCTAssertEqual(stats.sum("total_query_count", where: "database", is: "pgbouncer"), 4, "\(stats.rows)")
        XCTAssertEqual(stats.sum("total_server_assignment_count", where: "database", is: "pgbouncer"), 0)
        let totals = try first.show("SHOW TOTALS")
        let testdb = stats.sum("total_xact_count", where: "database", is: "testdb")
        XCTAssertEqual(totals.sum("value", where: "name", is: "total_xact_count"), testdb + 4, "\(totals.rows)")

        let users = try first.show("SHOW USERS")
        let names = Set(users.column("name").compactMap { $0 })
        XCTAssertTrue(names.isSuperset(of: ["u_md5", "u_password", "u_trust", "pgbouncer"]), "\(names)")
        let md5 = try XCTUnwrap(users.rows.first { $0[0] == "u_md5" })
        XCTAssertEqual(md5[users.columns.firstIndex(of: "current_connections")!], "0")
    }

    /// log_stats: every stats_period the supervisor logs PgBouncer's `stats:` line, in the shape
    /// pgbadger's PgBouncer pattern reads (`<time> [<pid>] LOG stats: ...`), with the rates of the
    /// period; `log_stats = 0` (here by SET) stops it.
    func testLogStatsLineEveryPeriodUnderLoad() throws {
        let pg = try PostgresServer.shared()
        var s = settings(pg, workers: 2, poolMode: "transaction")
        s.settings += [("stats_period", "1")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { c.close() }
        let pattern = try NSRegularExpression(pattern:
            #"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+ [A-Z]+ \[(\d+)\] LOG stats: (\d+) xacts/s, (\d+) queries/s, "#
            + #"(\d+) client parses/s, (\d+) server parses/s, (\d+) binds/s, in (\d+) B/s, out (\d+) B/s, "#
            + #"xact (\d+) us, query (\d+) us, wait (\d+) us$"#)
        func statsLines() -> [[String]] {
            px.log().split(separator: "\n").map(String.init).compactMap { line in
                let ns = line as NSString
                guard let m = pattern.firstMatch(in: line, range: NSRange(location: 0, length: ns.length)) else { return nil }
                return (1..<m.numberOfRanges).map { ns.substring(with: m.range(at: $0)) }
            }
        }
        var busy: [String]? = nil
        let found = try waitUntil(timeout: 20) {
            for _ in 0..<20 { _ = try c.query("select 1") }
            busy = statsLines().first { (Int($0[1]) ?? 0) > 0 }
            return busy != nil
        }
        XCTAssertTrue(found, "no stats line with xacts/s > 0:\n\(px.logLines(containing: "stats:").joined(separator: "\n"))")
        XCTAssertEqual(busy?[0], String(px.supervisorPid), "logged by the supervisor")
        XCTAssertGreaterThan(Int(busy?[2] ?? "") ?? 0, 0, "queries/s")
        XCTAssertGreaterThan(Int(busy?[6] ?? "") ?? 0, 0, "in B/s")

        let a = try admin(px)
        defer { a.close() }
        _ = try a.show("SET log_stats = 0")
        // The supervisor applies the SET before it answers, and writes its log lines itself: none after.
        let before = statsLines().count
        XCTAssertFalse(waitUntil(timeout: 3) { statsLines().count > before }, "a stats line after SET log_stats = 0")
    }
}
