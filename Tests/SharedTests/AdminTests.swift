// Tests of the admin console: command parsing, PgBouncer-compatible column lists, rendered results.
import XCTest
@testable import Shared  // Config.Setting's memberwise init

final class AdminParserTests: XCTestCase {
    func parse(_ q: String) -> Result<AdminCommand, AdminError> {
        do throws(AdminError) { return .success(try AdminCommand.parse(q)) } catch { return .failure(error) }
    }

    func assertCommand(_ q: String, _ expected: AdminCommand, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(parse(q), .success(expected), q, file: file, line: line)
    }

    func assertError(_ q: String, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(parse(q), .failure(AdminError(message)), q, file: file, line: line)
    }

    func testShow() {
        assertCommand("SHOW POOLS", .show(.pools))
        assertCommand("show pools;", .show(.pools))
        assertCommand("  Show\tStats_Totals ; \n", .show(.statsTotals))
        assertCommand("SHOW active_sockets", .show(.activeSockets))
        assertCommand("SHOW \"clients\"", .show(.clients))
        assertCommand("select version", .show(.version))
        assertCommand("SHOW WORKERS", .show(.workers))
        for t in AdminShowTarget.allCases { assertCommand("show \(t.rawValue.uppercased())", .show(t)) }
        assertCommand("SHOW client_encoding", .showFakeParameter(name: "client_encoding", value: "UTF-8"))
        assertCommand("show DateStyle", .showFakeParameter(name: "datestyle", value: "ISO"))
    }

    func testUnknownOrMalformedUsePgBouncerText() {
        assertError("SHOW", "invalid command 'SHOW', use SHOW HELP;")
        assertError("SHOW nosuch", "invalid command 'SHOW nosuch', use SHOW HELP;")
        assertError("SHOW POOLS extra", "invalid command 'SHOW POOLS extra', use SHOW HELP;")
        assertError("SHOW POOLS; SHOW STATS", "invalid command 'SHOW POOLS; SHOW STATS', use SHOW HELP;")
        assertError("SELECT 1", "invalid command 'SELECT 1', use SHOW HELP;")
        assertError("FROBNICATE", "invalid command 'FROBNICATE', use SHOW HELP;")
        assertError("", "invalid command '', use SHOW HELP;")
        assertError("RELOAD now", "invalid command 'RELOAD now', use SHOW HELP;")
        assertError("SUSPEND db", "invalid command 'SUSPEND db', use SHOW HELP;")
        assertError("SHUTDOWN now", "invalid command 'SHUTDOWN now', use SHOW HELP;")
        assertError("PAUSE \"unterminated", "invalid command 'PAUSE \"unterminated', use SHOW HELP;")
        assertError("PAUSE my-db", "invalid command 'PAUSE my-db', use SHOW HELP;")
        assertError("PAUSE " + String(repeating: "x", count: 64), "bad arguments")
        assertError("KILL_CLIENT_NOW_AND_FOREVER", "bad arguments")  // command longer than 15
        assertError("SET " + String(repeating: "k", count: 64) + " = 1", "bad arguments")
        assertError("SET \"\" = 1", "bad arguments")
        XCTAssertEqual(parse("nope"), .failure(AdminError.invalidCommand("nope")))
        XCTAssertEqual(AdminError.invalidCommand("x").code, "08P01")
    }

    func testProcessCommands() {
        assertCommand("PAUSE", .pause(database: nil))
        assertCommand("PAUSE mydb", .pause(database: "mydb"))
        assertCommand("pause \"My \"\"Db\"\"\";", .pause(database: "My \"Db\""))
        assertCommand("RESUME", .resume(database: nil))
        assertCommand("RESUME MixedCase", .resume(database: "MixedCase"))  // database names keep their case
        assertCommand("DISABLE", .disable(database: nil))
        assertCommand("DISABLE db1", .disable(database: "db1"))
        assertCommand("ENABLE db1", .enable(database: "db1"))
        assertCommand("RECONNECT", .reconnect(database: nil))
        assertCommand("KILL db1", .kill(database: "db1"))
        assertCommand("KILL", .kill(database: nil))
        assertCommand("KILL_CLIENT 1234", .killClient(id: 1234))
        assertCommand("KILL_CLIENT abc", .killClient(id: nil))
        assertCommand("KILL_CLIENT", .killClient(id: nil))
        assertCommand("SUSPEND", .suspend)
        assertCommand("SHUTDOWN", .shutdown(.immediate))
        assertCommand("shutdown wait_for_servers", .shutdown(.safe))
        assertCommand("SHUTDOWN WAIT_FOR_CLIENTS;", .shutdown(.graceful))
        assertCommand("RELOAD;", .reload)
        assertCommand("WAIT_CLOSE", .waitClose(database: nil))
        assertCommand("wait_close db2", .waitClose(database: "db2"))
        assertCommand("UPGRADE", .upgrade)
    }

    func testSet() {
        assertCommand("SET default_pool_size = 30", .set(key: "default_pool_size", value: "30"))
        assertCommand("set default_pool_size=30;", .set(key: "default_pool_size", value: "30"))
        assertCommand("SET server_check_query = 'select ''x'''", .set(key: "server_check_query", value: "select 'x'"))
        assertCommand("SET log_connections TO 0", .set(key: "log_connections", value: "0"))
        assertCommand("SET \"pool_mode\" = \"session\"", .set(key: "pool_mode", value: "session"))
        assertCommand("SET client_encoding = 'UTF8'", .setFakeParameter(name: "client_encoding"))
        assertCommand("set TimeZone to 'UTC'", .setFakeParameter(name: "timezone"))
        assertCommand("  Set\tquery_wait_timeout  TO  '30' ; ", .set(key: "query_wait_timeout", value: "30"))
        assertCommand("SET admin_users = 'a,b'", .set(key: "admin_users", value: "a,b"))
        assertCommand("SET auth_user = ''", .set(key: "auth_user", value: ""))
        assertCommand("SET Default_Pool_Size=5", .set(key: "Default_Pool_Size", value: "5"))
        assertCommand("SET verbose to 2", .set(key: "verbose", value: "2"))
        assertCommand("SET \"weird \"\"key\"\"\" = 1", .set(key: "weird \"key\"", value: "1"))
        // PgBouncer's bare value is [0-9a-z_]+: anything else must be quoted.
        assertError("SET query_timeout = 0.5", "invalid command 'SET query_timeout = 0.5', use SHOW HELP;")
        assertCommand("SET query_timeout = '0.5'", .set(key: "query_timeout", value: "0.5"))
        assertError("SET pool_mode session", "invalid command 'SET pool_mode session', use SHOW HELP;")
        assertError("SET pool_mode = session extra", "invalid command 'SET pool_mode = session extra', use SHOW HELP;")
        assertError("SETpool_mode = session", "invalid command 'SETpool_mode = session', use SHOW HELP;")
        // Key below 64 bytes and value below 256 (quotes included), as PgBouncer's buffers.
        assertCommand("SET k = '" + String(repeating: "v", count: 253) + "'",
                      .set(key: "k", value: String(repeating: "v", count: 253)))
        assertError("SET k = '" + String(repeating: "v", count: 254) + "'", "bad arguments")
        assertError("SET x", "invalid command 'SET x', use SHOW HELP;")
        assertError("SET x = 'unterminated", "invalid command 'SET x = 'unterminated', use SHOW HELP;")
    }

    func testAdminRequestRoundTrip() throws {
        for r in [AdminRequest(requestID: 5, isAdmin: true, query: "SHOW POOLS; -- ☃"),
                  AdminRequest(requestID: 6, isAdmin: false, query: "")] {
            let bytes = r.encode()
            XCTAssertEqual(try AdminRequest.decode(bytes, requestID: r.requestID), r)
            let chunks = StatsChunk.split(bytes, kind: .adminRequest, slot: 1, requestID: r.requestID)
            var asm = StatsReassembler()
            let blob = try XCTUnwrap(try asm.add(chunks[0]))
            XCTAssertEqual(try AdminRequest.decode(blob.bytes, requestID: blob.requestID), r)
        }
        XCTAssertThrowsError(try AdminRequest.decode([], requestID: 1))
        XCTAssertThrowsError(try AdminRequest.decode([2, 65], requestID: 1))
        XCTAssertThrowsError(try AdminRequest.decode([0, 0xFF], requestID: 1))
    }

    func testAccess() throws {
        XCTAssertFalse(try AdminCommand.parse("SHOW POOLS").requiresAdmin)
        XCTAssertTrue(try AdminCommand.parse("SHOW FDS").requiresAdmin)
        XCTAssertTrue(try AdminCommand.parse("PAUSE").requiresAdmin)
        XCTAssertTrue(try AdminCommand.parse("SET a = b").requiresAdmin)
        XCTAssertFalse(try AdminCommand.parse("SET client_encoding = x").requiresAdmin)
    }
}

final class AdminColumnsTests: XCTestCase {
    // PgBouncer 1.24 column lists, written out from its src/admin.c and src/stats.c (RowDescription
    // type strings: s = text 25, i = int4 23, q = int8 20, N = numeric 1700, T = timestamp sent as text 25)
    // and doc/usage.md. Deliberately not derived from AdminColumns, so a typo there shows up here.
    static let text: Int32 = 25, int4: Int32 = 23, int8: Int32 = 20, numeric: Int32 = 1700

    static let pgbouncer: [AdminShowTarget: [(String, Int32)]] = {
        let t = text, i = int4, q = int8, n = numeric
        let socket: [(String, Int32)] = [
            ("type", t), ("user", t), ("database", t), ("replication", t), ("state", t), ("addr", t), ("port", i),
            ("local_addr", t), ("local_port", i), ("connect_time", t), ("request_time", t), ("wait", i),
            ("wait_us", i), ("close_needed", i), ("ptr", t), ("link", t), ("remote_pid", i), ("tls", t),
            ("application_name", t), ("prepared_statements", i), ("id", i)]
        let socketDebug = socket + [("recv_pos", i), ("pkt_pos", i), ("pkt_remain", i), ("send_pos", i),
                                    ("send_remain", i), ("pkt_avail", i), ("send_avail", i)]
        return [
            .pools: [("database", t), ("user", t), ("cl_active", i), ("cl_waiting", i), ("cl_active_cancel_req", i),
                     ("cl_waiting_cancel_req", i), ("sv_active", i), ("sv_active_cancel", i), ("sv_being_canceled", i),
                     ("sv_idle", i), ("sv_used", i), ("sv_tested", i), ("sv_login", i), ("maxwait", i),
                     ("maxwait_us", i), ("pool_mode", t), ("load_balance_hosts", t), ("cl_pinned", i), ("sv_listen", i)],
            .stats: [("database", t), ("total_server_assignment_count", n), ("total_xact_count", n),
                     ("total_query_count", n), ("total_received", n), ("total_sent", n), ("total_xact_time", n),
                     ("total_query_time", n), ("total_wait_time", n), ("total_client_parse_count", n),
                     ("total_server_parse_count", n), ("total_bind_count", n), ("avg_server_assignment_count", n),
                     ("avg_xact_count", n), ("avg_query_count", n), ("avg_recv", n), ("avg_sent", n),
                     ("avg_xact_time", n), ("avg_query_time", n), ("avg_wait_time", n),
                     ("avg_client_parse_count", n), ("avg_server_parse_count", n), ("avg_bind_count", n)],
            .statsTotals: [("database", t), ("server_assignment_count", n), ("xact_count", n), ("query_count", n),
                           ("bytes_received", n), ("bytes_sent", n), ("xact_time", n), ("query_time", n),
                           ("wait_time", n), ("client_parse_count", n), ("server_parse_count", n), ("bind_count", n)],
            .statsAverages: [("database", t), ("server_assignment_count", n), ("xact_count", n), ("query_count", n),
                             ("bytes_received", n), ("bytes_sent", n), ("xact_time", n), ("query_time", n),
                             ("wait_time", n), ("avg_client_parse_count", n), ("avg_server_parse_count", n),
                             ("avg_bind_count", n)],
            .totals: [("name", t), ("value", n)],
            .clients: socket,
            .servers: socket,
            .sockets: socketDebug,
            .activeSockets: socketDebug,
            .databases: [("name", t), ("host", t), ("port", i), ("database", t), ("force_user", t), ("pool_size", i),
                         ("min_pool_size", i), ("reserve_pool_size", i), ("server_lifetime", i), ("pool_mode", t),
                         ("load_balance_hosts", t), ("max_connections", i), ("current_connections", i),
                         ("max_client_connections", i), ("current_client_connections", i), ("paused", i),
                         ("disabled", i)],
            .users: [("name", t), ("pool_size", t), ("reserve_pool_size", t), ("pool_mode", t),
                     ("max_user_connections", i), ("current_connections", i), ("max_user_client_connections", i),
                     ("current_client_connections", i)],
            .lists: [("list", t), ("items", i)],
            .config: [("key", t), ("value", t), ("default", t), ("changeable", t)],
            .state: [("key", t), ("value", t)],
            .version: [("version", t)],
            .peers: [("peer_id", i), ("host", t), ("port", i), ("pool_size", i)],
            .peerPools: [("peer_id", i), ("cl_active_cancel_req", i), ("cl_waiting_cancel_req", i),
                         ("sv_active_cancel", i), ("sv_login", i)],
            .mem: [("name", t), ("size", i), ("used", i), ("free", i), ("memtotal", i)],
            .dnsHosts: [("hostname", t), ("ttl", q), ("addrs", t)],
            .dnsZones: [("zonename", t), ("serial", q), ("count", i)],
            .fds: [("fd", i), ("task", t), ("user", t), ("database", t), ("addr", t), ("port", i), ("cancel", q),
                   ("link", i), ("client_encoding", t), ("std_strings", t), ("datestyle", t), ("timezone", t),
                   ("password", t), ("scram_client_key", 17), ("scram_server_key", 17)],
        ]
    }()

    func testEveryPgBouncerShowMatches() {
        for target in AdminShowTarget.allCases where target != .help && target != .workers && target != .health
            && target != .routing {
            guard let expected = Self.pgbouncer[target] else {
                XCTFail("no PgBouncer reference list for \(target)")
                continue
            }
            let ours = AdminColumns.columns(for: target) ?? []
            XCTAssertEqual(ours.map(\.name), expected.map(\.0), "\(target) names")
            XCTAssertEqual(ours.map(\.typeOID), expected.map(\.1), "\(target) types")
        }
        XCTAssertNil(AdminColumns.columns(for: .help))
        XCTAssertEqual(AdminColumns.workers.map(\.name),
                       ["slot", "pid", "started_at", "clients", "servers", "state", "restarts", "cpu_seconds", "rss_bytes"])
    }

    /// The averages' "avg_" prefix on the last three columns of STATS_AVERAGES is PgBouncer's; keep it.
    func testQuirksKept() {
        XCTAssertEqual(AdminColumns.statsAverages.last?.name, "avg_bind_count")
        XCTAssertEqual(AdminColumns.statsTotals.last?.name, "bind_count")
    }
}

/// Decodes the backend messages the renderers produce.
struct AdminWire {
    enum Message: Equatable {
        case rowDescription([String], [Int32])
        case dataRow([String?])
        case commandComplete(String)
        case error([UInt8: String])
        case notice([UInt8: String])
    }

    static func decode(_ out: OutBuffer) -> [Message] {
        let b = out.bytes
        var i = 0
        var result: [Message] = []
        func i32(_ at: Int) -> Int32 { Int32(bitPattern: UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])) }
        func i16(_ at: Int) -> Int { Int(Int16(bitPattern: UInt16(b[at]) << 8 | UInt16(b[at + 1]))) }
        func cstring(_ at: inout Int) -> String {
            let start = at
            while b[at] != 0 { at += 1 }
            defer { at += 1 }
            return String(decoding: b[start..<at], as: UTF8.self)
        }
        while i < b.count {
            let type = b[i]
            let len = Int(i32(i + 1))
            var p = i + 5
            let end = i + 1 + len
            switch type {
            case UInt8(ascii: "T"):
                let n = i16(p); p += 2
                var names: [String] = [], types: [Int32] = []
                for _ in 0..<n {
                    names.append(cstring(&p))
                    types.append(i32(p + 6))
                    p += 18
                }
                result.append(.rowDescription(names, types))
            case UInt8(ascii: "D"):
                let n = i16(p); p += 2
                var values: [String?] = []
                for _ in 0..<n {
                    let l = Int(i32(p)); p += 4
                    if l < 0 { values.append(nil); continue }
                    values.append(String(decoding: b[p..<(p + l)], as: UTF8.self)); p += l
                }
                result.append(.dataRow(values))
            case UInt8(ascii: "C"):
                result.append(.commandComplete(cstring(&p)))
            case UInt8(ascii: "E"), UInt8(ascii: "N"):
                var fields: [UInt8: String] = [:]
                while b[p] != 0 { let f = b[p]; p += 1; fields[f] = cstring(&p) }
                result.append(type == UInt8(ascii: "E") ? .error(fields) : .notice(fields))
            default:
                XCTFail("unexpected message type \(type)")
            }
            i = end
        }
        return result
    }

    static func rows(_ messages: [Message]) -> [[String?]] {
        messages.compactMap { if case .dataRow(let r) = $0 { return r } else { return nil } }
    }
}

final class AdminResultsTests: XCTestCase {
    var out = OutBuffer(capacity: 1024)
    override func tearDown() { out.deallocate() }

    func merged() -> MergedStats {
        var p = PoolStats(database: "db1", user: "app", poolMode: .transaction)
        p.clActive = 3
        p.clWaiting = 2
        p.svActive = 2
        p.svIdle = 1
        p.svListen = 1
        p.maxWaitMicros = 2_250_000
        p.totals.queryCount = 300
        p.totals.xactCount = 100
        p.totals.queryTimeMicros = 30_000
        var q = PoolStats(database: "db1", user: "other", poolMode: .session)
        q.totals.queryCount = 100
        var w = WorkerStatsSnapshot(slot: 0, pid: 10, startedAt: 1, takenAt: 2)
        w.pools = [p, q]
        w.lists.usedClients = 5
        return MergedStats.merge([w])
    }

    func testShowPools() {
        AdminResults.pools(merged(), into: &out)
        let m = AdminWire.decode(out)
        XCTAssertEqual(m.first, .rowDescription(AdminColumns.pools.map(\.name), AdminColumns.pools.map(\.typeOID)))
        XCTAssertEqual(AdminWire.rows(m), [
            ["db1", "app", "3", "2", "0", "0", "2", "0", "0", "1", "0", "0", "0", "2", "250000", "transaction", nil, "0", "1"],
            ["db1", "other", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "session", nil, "0", "0"],
        ])
        XCTAssertEqual(m.last, .commandComplete("SHOW"))
    }

    func testShowStatsFamily() {
        let m = merged()
        var avg = StatsAverager(now: 0)
        avg.refresh([], now: 1_000_000)
        AdminResults.stats(m, averager: avg, now: 3_000_000, into: &out)
        var rows = AdminWire.rows(AdminWire.decode(out))
        XCTAssertEqual(rows.count, 1)  // one row per database
        XCTAssertEqual(rows[0].count, 23)
        XCTAssertEqual(rows[0][0], "db1")
        XCTAssertEqual(rows[0][3], "400")      // total_query_count
        XCTAssertEqual(rows[0][14], "133")     // avg_query_count: 400 over the 3 s since the refresh before last
        XCTAssertEqual(rows[0][18], "75")      // avg_query_time: 30000 µs / 400
        out.clear()
        AdminResults.statsTotals(m, into: &out)
        rows = AdminWire.rows(AdminWire.decode(out))
        XCTAssertEqual(rows, [["db1", "0", "100", "400", "0", "0", "0", "30000", "0", "0", "0", "0"]])
        out.clear()
        AdminResults.statsAverages(m, averager: avg, now: 3_000_000, into: &out)
        XCTAssertEqual(AdminWire.rows(AdminWire.decode(out))[0][3], "133")
        out.clear()
        AdminResults.totals(m, averager: avg, now: 3_000_000, into: &out)
        rows = AdminWire.rows(AdminWire.decode(out))
        XCTAssertEqual(rows.count, 22)
        XCTAssertEqual(rows[2], ["total_query_count", "400"])
        XCTAssertEqual(rows[3], ["total_client_bytes", "0"])
        XCTAssertEqual(rows[13], ["avg_query_count", "133"])
    }

    func testShowClients() {
        var r = ConnectionRow(isServer: false, user: "app", database: "db1", state: "waiting")
        r.addr = "127.0.0.1"
        r.port = 40000
        r.connectTime = 1_700_000_000_000_000
        r.waitMicros = 3_000_042
        r.ptr = 0xabc
        r.id = 17
        r.applicationName = "psql"
        var s = ConnectionRow(isServer: true, user: "", database: "", state: "idle")
        s.link = 0x10
        AdminResults.clients([r, s], into: &out)
        let rows = AdminWire.rows(AdminWire.decode(out))
        XCTAssertEqual(rows[0], ["C", "app", "db1", "none", "waiting", "127.0.0.1", "40000", "", "0",
                                 "2023-11-14 22:13:20 UTC", nil, "3", "42", "0", "0xabc", "", "0", "", "psql", "0", "17"])
        XCTAssertEqual(rows[1][0], "S")
        XCTAssertEqual(rows[1][1], "(nouser)")
        XCTAssertEqual(rows[1][2], "(nodb)")
        XCTAssertEqual(rows[1][15], "0x10")
    }

    func testShowUsersDatabasesConfigStateVersionLists() {
        AdminResults.users([AdminUserRow(name: "app", poolSize: 20, reservePoolSize: nil, poolMode: nil,
                                         maxUserConnections: 0, currentConnections: 3, maxUserClientConnections: 0,
                                         currentClientConnections: 4)], into: &out)
        XCTAssertEqual(AdminWire.rows(AdminWire.decode(out)), [["app", "       20", "", nil, "0", "3", "0", "4"]])
        out.clear()
        AdminResults.databases([AdminDatabaseRow(name: "db1", host: "127.0.0.1", port: 5432, database: "real",
                                                 forceUser: nil, poolSize: 20, minPoolSize: 0, reservePoolSize: 0,
                                                 serverLifetime: 3600, poolMode: nil, maxConnections: 0,
                                                 currentConnections: 2, maxClientConnections: 0,
                                                 currentClientConnections: 5, paused: true, disabled: false)],
                               into: &out)
        XCTAssertEqual(AdminWire.rows(AdminWire.decode(out)),
                       [["db1", "127.0.0.1", "5432", "real", nil, "20", "0", "0", "3600", nil, nil, "0", "2", "0", "5", "1", "0"]])
        out.clear()
        AdminResults.config([Config.Setting(key: "max_client_conn", value: "100", defaultValue: "100", implemented: true,
                                            changeable: true)],
                            into: &out)
        XCTAssertEqual(AdminWire.rows(AdminWire.decode(out)), [["max_client_conn", "100", "100", "yes"]])
        out.clear()
        AdminResults.state(paused: true, suspended: false, into: &out)
        XCTAssertEqual(AdminWire.rows(AdminWire.decode(out)), [["active", "no"], ["paused", "yes"], ["suspended", "no"]])
        out.clear()
        AdminResults.version("pgswift 9.9", into: &out)
        XCTAssertEqual(AdminWire.rows(AdminWire.decode(out)), [["pgswift 9.9"]])
        out.clear()
        AdminResults.lists(merged(), databases: 2, users: 3, dnsNames: 4, dnsQueries: 1, into: &out)
        let lists = AdminWire.rows(AdminWire.decode(out))
        XCTAssertEqual(lists.map { $0[0]! }, ["databases", "users", "peers", "pools", "peer_pools", "free_clients",
                                              "used_clients", "login_clients", "free_servers", "used_servers",
                                              "dns_names", "dns_zones", "dns_queries", "dns_pending"])
        XCTAssertEqual(lists[3], ["pools", "2"])
        XCTAssertEqual(lists[6], ["used_clients", "5"])
        XCTAssertEqual(Array(lists[10...]), [["dns_names", "4"], ["dns_zones", "0"], ["dns_queries", "1"], ["dns_pending", "0"]])
    }

    func testShowWorkersAndEmpty() {
        AdminResults.workers([
            AdminWorkerRow(slot: 0, pid: 123, startedAt: 1_700_000_000, clients: 4, servers: 2, state: "running",
                           restarts: 1, cpuMicros: 1_500_000, residentBytes: 9_000_000),
            AdminWorkerRow(slot: 1, pid: 0, startedAt: 0, clients: 0, servers: 0, state: "restarting",
                           restarts: 3, cpuMicros: 0, residentBytes: 0),
        ], into: &out)
        XCTAssertEqual(AdminWire.rows(AdminWire.decode(out)), [
            ["0", "123", "2023-11-14 22:13:20 UTC", "4", "2", "running", "1", "1.5", "9000000"],
            ["1", "0", nil, "0", "0", "restarting", "3", "0", "0"],
        ])
        out.clear()
        AdminResults.empty(.dnsHosts, into: &out)
        let m = AdminWire.decode(out)
        XCTAssertEqual(m, [.rowDescription(["hostname", "ttl", "addrs"], [25, 20, 25]), .commandComplete("SHOW")])
    }

    /// SHOW SOCKETS / ACTIVE_SOCKETS: SHOW CLIENTS' columns, PgBouncer's list names as state, the
    /// buffer columns; clients, servers, then clients logging in. ACTIVE_SOCKETS keeps those with bytes.
    func testShowSocketsAndActiveSockets() {
        var m = MergedStats()
        var idle = ConnectionRow(isServer: false, user: "app", database: "db1", state: "idle")
        idle.id = 5
        var login = ConnectionRow(isServer: false, user: "app", database: "db1", state: "login")
        login.id = 9
        login.buffers = SocketBuffers(recvPos: 8, pktPos: 8, sendPos: 0)
        var waiting = ConnectionRow(isServer: false, user: "app", database: "db1", state: "waiting")
        waiting.id = 6
        var server = ConnectionRow(isServer: true, user: "app", database: "db1", state: "new")
        server.id = 7
        server.buffers = SocketBuffers(recvPos: 100, pktPos: 60, pktRemain: 5, sendPos: 20, sendRemain: 3)
        var used = ConnectionRow(isServer: true, user: "app", database: "db1", state: "used")
        used.id = 8
        m.clients = [idle, login, waiting]
        m.servers = [server, used]
        AdminResults.sockets(m, activeOnly: false, into: &out)
        let messages = AdminWire.decode(out)
        XCTAssertEqual(messages.first, .rowDescription(AdminColumns.sockets.map(\.name), AdminColumns.sockets.map(\.typeOID)))
        let rows = AdminWire.rows(messages)
        XCTAssertEqual(rows.map { $0[20] }, ["5", "6", "7", "8", "9"])
        XCTAssertEqual(rows.map { $0[4] }, ["cl_active", "cl_waiting", "sv_login", "sv_used", "cl_login"])
        XCTAssertEqual(Array(rows[2][21...]), ["100", "60", "5", "20", "3", "40", "40"])
        XCTAssertEqual(Array(rows[0][21...]), ["0", "0", "0", "0", "0", "0", "0"])
        out.clear()
        AdminResults.sockets(m, activeOnly: true, into: &out)
        XCTAssertEqual(AdminWire.rows(AdminWire.decode(out)).map { $0[20] }, ["7", "9"])
        XCTAssertEqual(AdminResults.socketListName(ConnectionRow(isServer: true, user: "", database: "", state: "being_canceled")),
                       "sv_being_canceled")
    }

    /// SHOW FDS: the listeners as `pooler`, then clients and servers with their partner's fd, cancel key
    /// and session parameters; admin console clients left out; no password or SCRAM keys.
    func testShowFds() {
        var m = MergedStats()
        var c = ConnectionRow(isServer: false, user: "app", database: "db1", state: "active")
        c.fd = 12
        c.linkFD = 14
        c.addr = "127.0.0.1"
        c.port = 40000
        c.cancelKey = 0x0000_0001_FFFF_FFFF
        c.clientEncoding = "UTF8"
        c.standardConformingStrings = "on"
        c.dateStyle = "ISO, MDY"
        c.timeZone = "UTC"
        var admin = ConnectionRow(isServer: false, user: "admin", database: "pgbouncer", state: "active")
        admin.isAdmin = true
        var s = ConnectionRow(isServer: true, user: "app", database: "db1", state: "active")
        s.fd = 14
        s.linkFD = 12
        s.addr = "10.0.0.5"
        s.port = 5432
        s.cancelKey = UInt64.max
        m.clients = [c, admin]
        m.servers = [s]
        AdminResults.fds(listeners: [AdminListenerRow(fd: 3, addr: "0.0.0.0", port: 6432),
                                     AdminListenerRow(fd: 4, addr: "unix", port: 6432)], m, into: &out)
        let messages = AdminWire.decode(out)
        XCTAssertEqual(messages.first, .rowDescription(AdminColumns.fds.map(\.name), AdminColumns.fds.map(\.typeOID)))
        XCTAssertEqual(AdminWire.rows(messages), [
            ["3", "pooler", nil, nil, "0.0.0.0", "6432", "0", "0", nil, nil, nil, nil, nil, nil, nil],
            ["4", "pooler", nil, nil, "unix", "6432", "0", "0", nil, nil, nil, nil, nil, nil, nil],
            ["12", "client", "app", "db1", "127.0.0.1", "40000", "8589934591", "14", "UTF8", "on", "ISO, MDY", "UTC",
             nil, nil, nil],
            ["14", "server", "app", "db1", "10.0.0.5", "5432", "18446744073709551615", "12", nil, nil, nil, nil,
             nil, nil, nil],
        ])
    }

    /// SHOW MEM: name, size, used, free, memtotal per object kind; int4 columns saturate.
    func testShowMem() {
        AdminResults.mem([MemoryRow(name: "client_cache", size: 312, used: 3, free: 13),
                          MemoryRow(name: "iobuf_cache", size: 1 << 20, used: 4096, free: 0)], into: &out)
        let messages = AdminWire.decode(out)
        XCTAssertEqual(messages.first, .rowDescription(["name", "size", "used", "free", "memtotal"], [25, 23, 23, 23, 23]))
        XCTAssertEqual(AdminWire.rows(messages), [["client_cache", "312", "3", "13", "4992"],
                                                  ["iobuf_cache", "1048576", "4096", "0", "2147483647"]])
    }

    /// SHOW CONFIG keeps PgBouncer's four columns; settings from PGSWIFT_<KEY> variables are named in a
    /// NOTICE before the rows (none without them).
    func testShowConfigNamesSettingsFromTheEnvironmentInANotice() {
        let row = Config.Setting(key: "workers", value: "4", defaultValue: "", implemented: true, changeable: false)
        AdminResults.config([row], into: &out)
        XCTAssertEqual(AdminWire.decode(out).first, .rowDescription(["key", "value", "default", "changeable"], [25, 25, 25, 25]))
        out.clear()
        AdminResults.config([row], fromEnvironment: [("default_pool_size", "PGSWIFT_DEFAULT_POOL_SIZE"),
                                                     ("workers", "PGSWIFT_WORKERS")], into: &out)
        let m = AdminWire.decode(out)
        guard case .notice(let n) = m.first else { return XCTFail("no notice: \(m)") }
        XCTAssertEqual(n[UInt8(ascii: "M")], "set by the environment: default_pool_size, workers")
        XCTAssertEqual(n[UInt8(ascii: "D")], "default_pool_size from PGSWIFT_DEFAULT_POOL_SIZE\nworkers from PGSWIFT_WORKERS")
        XCTAssertEqual(AdminWire.rows(m), [["workers", "4", "", "no"]])
    }

    func testHelpErrorsAndFakes() {
        AdminResults.help(into: &out)
        var m = AdminWire.decode(out)
        guard case .notice(let fields) = m.first else { return XCTFail("no notice") }
        XCTAssertEqual(fields[UInt8(ascii: "M")], "Console usage")
        XCTAssertTrue(fields[UInt8(ascii: "D")]?.hasPrefix("\n\tSHOW HELP|CONFIG") ?? false)
        XCTAssertEqual(m.last, .commandComplete("SHOW"))
        out.clear()
        AdminResults.error(.noSuchDatabase("x"), into: &out)
        m = AdminWire.decode(out)
        guard case .error(let e) = m.first else { return XCTFail("no error") }
        XCTAssertEqual(e[UInt8(ascii: "S")], "ERROR")
        XCTAssertEqual(e[UInt8(ascii: "C")], "08P01")
        XCTAssertEqual(e[UInt8(ascii: "M")], "no such database: x")
        out.clear()
        AdminResults.fakeParameter(name: "client_encoding", value: "UTF-8", into: &out)
        XCTAssertEqual(AdminWire.decode(out), [.rowDescription(["client_encoding"], [25]), .dataRow(["UTF-8"]),
                                               .commandComplete("SHOW")])
        out.clear()
        AdminResults.fakeSet(into: &out)
        m = AdminWire.decode(out)
        XCTAssertEqual(m.last, .commandComplete("SET"))
        out.clear()
        AdminResults.setDone(key: "default_pool_size", value: "30", into: &out)
        XCTAssertEqual(AdminWire.decode(out), [.commandComplete("SET default_pool_size=30")])
        out.clear()
        AdminResults.setDone(key: "listen_port", value: "1", notice: "ignored", into: &out)
        m = AdminWire.decode(out)
        guard case .notice(let n) = m.first else { return XCTFail("no notice") }
        XCTAssertEqual(n[UInt8(ascii: "M")], "ignored")
        XCTAssertEqual(m.last, .commandComplete("SET listen_port=1"))
        out.clear()
        // PgBouncer's fixed text and code; the reason goes in DETAIL.
        AdminResults.error(AdminError.setFailed.detailed("unknown parameter: x"), into: &out)
        guard case .error(let f) = AdminWire.decode(out).first else { return XCTFail("no error") }
        XCTAssertEqual(f[UInt8(ascii: "M")], "SET failed")
        XCTAssertEqual(f[UInt8(ascii: "C")], "08P01")
        XCTAssertEqual(f[UInt8(ascii: "D")], "unknown parameter: x")
        XCTAssertEqual(AdminError.reloadFailed.message, "RELOAD failed, see logs for additional details")
        XCTAssertEqual(AdminError.reloadFailed.code, "F0000")
        out.clear()
        AdminResults.done("PAUSE", into: &out)
        XCTAssertEqual(AdminWire.decode(out), [.commandComplete("PAUSE")])
    }

    func testDecimalMicros() {
        XCTAssertEqual(AdminResults.decimalMicros(0), "0")
        XCTAssertEqual(AdminResults.decimalMicros(16), "0.000016")
        XCTAssertEqual(AdminResults.decimalMicros(1_048_576), "1.048576")
        XCTAssertEqual(AdminResults.decimalMicros(1_500_000), "1.5")
        XCTAssertEqual(AdminResults.decimalMicros(134_217_728), "134.217728")
        XCTAssertEqual(AdminResults.decimalMicros(.max), "18446744073709.551615")
    }
}
