// Read/write routing's classification of a transaction's first message (Routing.swift); the routing
// itself, against a real primary and standbys, is EndToEndTests/RoutingTests.
import XCTest
@testable import Worker
import Shared
import Glibc

final class RoutingTests: XCTestCase {
    /// A Query or Parse message's body (after the type and length).
    private func body(_ type: UInt8, _ sql: String, name: String = "") -> [UInt8] {
        if type == FrontendType.parse { return Array(name.utf8) + [0] + Array(sql.utf8) + [0, 0, 0] }
        return Array(sql.utf8) + [0]
    }

    private func target(_ sql: String, type: UInt8 = FrontendType.query, name: String = "",
                        classifier: SQLClassifier = SQLClassifier()) -> RouteTarget? {
        let b = body(type, sql, name: name)
        return b.withUnsafeBytes { raw in
            RouteClassifier.text(type: type, body: raw).map { RouteClassifier.target($0, classifier) }
        }
    }

    func testReadsGoToStandbys() {
        for sql in ["select 1", "SELECT * FROM t WHERE a = 'x;y'", "with a as (select 1) select * from a", "values (1)",
                    "table t", "show search_path", "explain select 1", "select 1; select 2", "  /* c */ select 1",
                    "BEGIN READ ONLY", "start transaction isolation level serializable, read only", "select 1;"] {
            XCTAssertEqual(target(sql), .read, sql)
        }
    }

    func testWritesAndUnknownGoToThePrimary() {
        for sql in ["insert into t values (1)", "update t set a = 1", "delete from t", "select * from t for update",
                    "select nextval('s')", "select pg_advisory_lock(1)", "with x as (delete from t returning *) select * from x",
                    "select * into t2 from t", "begin", "begin read write", "set a = 1", "listen x", "copy t from stdin",
                    "create table x(a int)", "select 1; insert into t values (1)", "explain analyze delete from t",
                    "", "  ", "select 'unterminated", "checkpoint", "call p()", "do $$ begin end $$"] {
            XCTAssertEqual(target(sql), .write, sql)
        }
    }

    func testHintsDecideFirst() {
        XCTAssertEqual(target("/* pgswift:primary */ select 1"), .write)
        XCTAssertEqual(target("/*pgswift:standby*/ select 1"), .read)
        XCTAssertEqual(target("/* PGSWIFT:STANDBY */ select now()"), .read)
        // A hint is read before the first word only.
        XCTAssertEqual(target("select /* pgswift:primary */ 1"), .read)
    }

    func testParseTextAfterTheStatementName() {
        XCTAssertEqual(target("select 1", type: FrontendType.parse, name: "s1"), .read)
        XCTAssertEqual(target("update t set a = 1", type: FrontendType.parse), .write)
        // Other messages carry no text: nothing to classify (the caller sends them to the primary).
        XCTAssertNil(Array("x".utf8).withUnsafeBytes { RouteClassifier.text(type: FrontendType.bind, body: $0) })
        XCTAssertNil([UInt8](Array("select 1".utf8)).withUnsafeBytes { RouteClassifier.text(type: FrontendType.query, body: $0) },
                     "no terminating NUL")
    }

    func testConfiguredDenyList() {
        let c = SQLClassifier(denyList: SQLFunctionDenyList(commaSeparated: "my_writer, audit_*"))
        XCTAssertEqual(target("select my_writer(1)", classifier: c), .write)
        XCTAssertEqual(target("select audit_log('x')", classifier: c), .write)
        XCTAssertEqual(target("select nextval('s')", classifier: c), .read, "the configured list replaces the default")
    }

    private func key(_ sql: String, pool: Int = 0) -> UInt64? {
        Array(sql.utf8).withUnsafeBytes { RouteVerdictCache.key($0, pool: pool) }
    }

    /// The verdict cache: texts that differ only in constants share a key (classified once); a text with
    /// a comment has none (a hint must never take an unhinted text's verdict, or the reverse); pools differ.
    func testVerdictCacheKeys() {
        let a = key("SELECT abalance FROM pgbench_accounts WHERE aid = 42;")
        XCTAssertNotNil(a)
        XCTAssertEqual(a, key("SELECT abalance FROM pgbench_accounts WHERE aid = 77031;"))
        XCTAssertEqual(key("select * from t where name = 'x'"), key("select * from t where name = 'yz'"))
        XCTAssertNotEqual(a, key("UPDATE pgbench_accounts SET abalance = 42;"))
        XCTAssertNotEqual(a, key("SELECT abalance FROM pgbench_accounts WHERE aid = 42;", pool: 1))
        XCTAssertNil(key("/* pgswift:primary */ SELECT abalance FROM pgbench_accounts WHERE aid = 42;"))
        XCTAssertNil(key("select 1 -- pgswift:primary"))
        XCTAssertNil(key("select a / b from t"), "a `/` anywhere opts out")
        XCTAssertNotNil(key("select a - b from t where c = -1"), "a lone `-` is no comment")
        XCTAssertNil(key("select $1"), "what the shape cannot read exactly is not cached")
        XCTAssertNil(key(""))
        var cache = RouteVerdictCache()
        cache.store(a!, .read)
        XCTAssertEqual(cache.lookup(a!), .read)
        XCTAssertNil(cache.lookup(key("UPDATE pgbench_accounts SET abalance = 42;")!))
        cache.clear()
        XCTAssertNil(cache.lookup(a!))
    }
}

/// Routing through a real worker loop (WorkerHarness): the harness's scripted backend plays the
/// primary, a second listener here the standby; the health check's verdicts are given to the worker
/// as the supervisor would push them. (Its helpers are used by RoutingFallbackTests.swift too.)
final class RoutingLoopTests: WorkerHarnessCase {
    var standbyListener: Int32 = -1
    var standbyPort = 0
    var standbys: [FakeServer] = []

    override func tearDown() {
        for s in standbys { s.close() }
        if standbyListener >= 0 { Glibc.close(standbyListener) }
        super.tearDown()
    }

    func startRouted(_ options: String = "read_after_write=none") throws {
        standbyListener = try Sockets.listenTCP(SocketAddress.numeric(host: "127.0.0.1", port: 0)!, reusePort: false, backlog: 16)
        standbyPort = Sockets.localAddress(standbyListener)?.port ?? 0
        try start(extraDatabases: ["rdb = host=127.0.0.1,127.0.0.1 port=$PORT,\(standbyPort) routing=read-write-split pool_size=4 \(options)"])
        setRoles(primary: h.backendPort, standby: standbyPort)
    }

    func setRoles(primary: Int, standby: Int) {
        let base: BackendFlags = [.known, .up, .roleKnown]
        h.worker.applyBackendState(host: "127.0.0.1", port: primary, flags: base.rawValue, addresses: [])
        h.worker.applyBackendState(host: "127.0.0.1", port: standby, flags: base.union([.inRecovery, .readOnly]).rawValue, addresses: [])
    }

    /// One loop turn on both sides, the standby listener's connections accepted and logged in here.
    func step() {
        h.step()
        var peer = SocketAddress()
        while let fd = try? Sockets.accept(standbyListener, peer: &peer) {
            try? Sockets.setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            standbys.append(FakeServer(peer: Peer(fd: fd), index: 1000 + standbys.count))
        }
        for s in standbys {
            s.peer.pump()
            if s.readStartup(), s.cancel == nil { s.answerLogin(welcome: h.welcome) }
        }
    }

    func wait(_ what: String, file: StaticString = #filePath, line: UInt = #line, _ cond: () -> Bool) {
        let deadline = Clock.monotonicNanos() + 10_000_000_000
        while !cond() {
            if Clock.monotonicNanos() > deadline { return XCTFail("timed out waiting for \(what)", file: file, line: line) }
            step()
        }
    }

    /// Sends `sql` and answers it on whichever server receives it; true when that was a standby.
    func run(_ c: Peer, _ sql: String, status: Character = "I", file: StaticString = #filePath, line: UInt = #line) -> Bool? {
        c.send(FE.query(sql))
        var got: (FakeServer, Bool)? = nil
        wait("\(sql) to reach a server", file: file, line: line) {
            for s in h.servers where s.loggedIn {
                if let m = s.nextMessage(), m.char == "Q" { got = (s, false); XCTAssertEqual(m.firstString, sql, file: file, line: line) }
            }
            for s in standbys where s.loggedIn {
                if let m = s.nextMessage(), m.char == "Q" { got = (s, true); XCTAssertEqual(m.firstString, sql, file: file, line: line) }
            }
            return got != nil
        }
        guard let (server, standby) = got else { return nil }
        server.send(BE.complete("SELECT 1") + BE.ready(status))
        var msgs: [Msg] = []
        wait("the answer to \(sql)", file: file, line: line) {
            while let m = c.reader.next() { msgs.append(m) }
            return msgs.last?.char == "Z"
        }
        return standby
    }

    func testReadsToTheStandbyWritesToThePrimary() throws {
        try startRouted()
        let c = h.login(database: "rdb")
        XCTAssertEqual(run(c, "select 1"), true)
        XCTAssertEqual(run(c, "insert into t values (1)"), false)
        XCTAssertEqual(run(c, "select * from t for update"), false)
        XCTAssertEqual(run(c, "select nextval('s')"), false)
        XCTAssertEqual(run(c, "/* pgswift:primary */ select 1"), false)
        XCTAssertEqual(run(c, "/* pgswift:standby */ select 1"), true)
        XCTAssertEqual(run(c, "BEGIN READ ONLY", status: "T"), true)
        XCTAssertEqual(run(c, "select 2", status: "T"), true, "the transaction stays on its server")
        XCTAssertEqual(run(c, "COMMIT"), true)
        XCTAssertEqual(run(c, "BEGIN", status: "T"), false)
        XCTAssertEqual(run(c, "select 3", status: "T"), false)
        XCTAssertEqual(run(c, "COMMIT"), false)
        let pi = try XCTUnwrap(h.worker.pools.indices.first { h.worker.pools[$0].database == "rdb" })
        let stats = h.worker.routeStats(pi)
        XCTAssertEqual(stats.map { $0.host }, ["127.0.0.1:\(h.backendPort)", "127.0.0.1:\(standbyPort)"])
        XCTAssertEqual(stats[0].writes, 5)
        XCTAssertEqual(stats[1].reads, 3)
        XCTAssertEqual(stats[1].writes, 0)
    }

    func testPrimaryWindowAndFallback() throws {
        try startRouted("read_after_write=primary_window read_after_write_window=60000")
        let c = h.login(database: "rdb")
        XCTAssertEqual(run(c, "select 1"), true)
        XCTAssertEqual(run(c, "insert into t values (1)"), false)
        XCTAssertEqual(run(c, "select 1"), false, "read right after a write: the primary")
        // The standby goes down: reads fall back to the primary.
        let other = try start2(c)
        XCTAssertEqual(run(other, "select 1"), true)
        let flags: BackendFlags = [.known, .roleKnown, .inRecovery]
        h.worker.applyBackendState(host: "127.0.0.1", port: standbyPort, flags: flags.rawValue, addresses: [])
        XCTAssertEqual(run(other, "select 1"), false, "no standby: fallback to the primary")
        let pi = try XCTUnwrap(h.worker.pools.indices.first { h.worker.pools[$0].database == "rdb" })
        XCTAssertEqual(h.worker.routeStats(pi)[0].fallbacks, 1)
        // Lagging counts as unusable too.
        h.worker.applyBackendState(host: "127.0.0.1", port: standbyPort,
                                   flags: flags.union([.up, .lagging]).rawValue, addresses: [])
        XCTAssertEqual(run(other, "select 1"), false, "lagging standby: fallback")
        h.worker.applyBackendState(host: "127.0.0.1", port: standbyPort, flags: flags.union(.up).rawValue, addresses: [])
        XCTAssertEqual(run(other, "select 1"), true)
    }

    /// Another client of the same pool.
    private func start2(_ c: Peer) throws -> Peer { h.login(database: "rdb") }

    /// read_after_write=lsn: after a write the primary is asked its WAL position at release; reads go to
    /// the primary until the standby's replay position (as the supervisor pushes it) has reached it.
    func testReadAfterWriteLSN() throws {
        try startRouted("read_after_write=lsn")
        let c = h.login(database: "rdb")
        h.worker.standbyReplayed(key: "127.0.0.1:\(standbyPort)", lsn: 0x50)
        XCTAssertEqual(run(c, "select 1"), true)
        XCTAssertEqual(run(c, "insert into t values (1)"), false)
        var asked: FakeServer? = nil
        wait("the commit position query") {
            for s in h.servers where s.loggedIn {
                if let m = s.nextMessage(), m.char == "Q" {
                    XCTAssertEqual(m.firstString, Worker.commitLSNQuery)
                    asked = s
                }
            }
            return asked != nil
        }
        asked?.send(BE.rowDescription(["pg_current_wal_insert_lsn"]) + BE.dataRow(["0/100"]) + BE.complete("SELECT 1")
                    + BE.ready("I"))
        XCTAssertEqual(run(c, "select 1"), false, "the standby has not replayed the commit yet")
        h.worker.standbyReplayed(key: "127.0.0.1:\(standbyPort)", lsn: 0xFF)
        XCTAssertEqual(run(c, "select 1"), false, "still one byte short")
        h.worker.standbyReplayed(key: "127.0.0.1:\(standbyPort)", lsn: 0x100)
        XCTAssertEqual(run(c, "select 1"), true, "caught up: reads go to the standby again")
        XCTAssertEqual(run(c, "select 1"), true)
        // Another client never waited.
        let other = h.login(database: "rdb")
        XCTAssertEqual(run(other, "select 1"), true)
    }

    /// Sends extended-protocol messages ending with Sync and answers them on whichever server gets
    /// them; true when that was a standby.
    func runExtended(_ c: Peer, _ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> Bool? {
        c.send(bytes)
        var got: (FakeServer, Bool, [Msg])? = nil
        var seen: [ObjectIdentifier: [Msg]] = [:]
        wait("a Sync on some server", file: file, line: line) {
            for (s, standby) in h.servers.filter({ $0.loggedIn }).map({ ($0, false) }) + standbys.filter({ $0.loggedIn }).map({ ($0, true) }) {
                while let m = s.nextMessage() {
                    seen[ObjectIdentifier(s), default: []].append(m)
                    if m.char == "S" { got = (s, standby, seen[ObjectIdentifier(s)]!) }
                }
            }
            return got != nil
        }
        guard let (server, standby, msgs) = got else { return nil }
        var answer: [UInt8] = []
        for m in msgs {
            switch m.char {
            case "P": answer += BE.parseComplete
            case "B": answer += BE.bindComplete
            case "E": answer += BE.complete("SELECT 1")
            case "S": answer += BE.ready("I")
            default: break
            }
        }
        server.send(answer)
        var out: [Msg] = []
        wait("the answer", file: file, line: line) {
            while let m = c.reader.next() { out.append(m) }
            return out.last?.char == "Z"
        }
        return standby
    }

    /// A named statement prepared in one transaction and bound in later ones is routed by its text.
    func testBoundPreparedStatementsAreClassifiedByTheirText() throws {
        try startRouted()
        let c = h.login(database: "rdb")
        XCTAssertEqual(runExtended(c, FE.parse("r", "select $1::int") + FE.bind("", "r", ["1"]) + FE.execute() + FE.sync), true)
        XCTAssertEqual(runExtended(c, FE.parse("w", "insert into t values ($1)") + FE.bind("", "w", ["1"]) + FE.execute() + FE.sync), false)
        for _ in 0..<3 {
            XCTAssertEqual(runExtended(c, FE.bind("", "r", ["2"]) + FE.execute() + FE.sync), true, "Bind of the read")
            XCTAssertEqual(runExtended(c, FE.bind("", "w", ["2"]) + FE.execute() + FE.sync), false, "Bind of the write")
        }
    }

    /// The 25006 safety net: a read the standby refuses before anything of its answer reached the
    /// client is re-run on the primary, and the client sees only the primary's answer; once part of
    /// the answer went out, the client gets the error.
    func testReadRefusedByTheStandbyIsRerunOnThePrimary() throws {
        try startRouted()
        let c = h.login(database: "rdb")
        XCTAssertEqual(run(c, "select 1"), true)
        let sql = "/* pgswift:standby */ insert into t values (1)"
        c.send(FE.query(sql))
        var standby: FakeServer? = nil
        wait("the read on the standby") {
            for s in standbys where s.loggedIn { if let m = s.nextMessage(), m.char == "Q" { standby = s } }
            return standby != nil
        }
        standby?.send(BE.error("25006", "cannot execute INSERT in a read-only transaction") + BE.ready("I"))
        var primary: FakeServer? = nil
        wait("the re-run on the primary") {
            for s in h.servers where s.loggedIn {
                if let m = s.nextMessage(), m.char == "Q" { XCTAssertEqual(m.firstString, sql); primary = s }
            }
            return primary != nil
        }
        primary?.send(BE.complete("INSERT 0 1") + BE.ready("I"))
        var msgs: [Msg] = []
        wait("the answer") {
            while let m = c.reader.next() { msgs.append(m) }
            return msgs.last?.char == "Z"
        }
        XCTAssertEqual(msgs.map { $0.char }, ["C", "Z"], "\(msgs)")
        let pi = try XCTUnwrap(h.worker.pools.indices.first { h.worker.pools[$0].database == "rdb" })
        XCTAssertEqual(h.worker.routeStats(pi)[0].retries, 1)
        // The standby's connection is usable again, and reads go on there.
        XCTAssertEqual(run(c, "select 2"), true)
        // Part of the answer out first: no retry, the client gets the error.
        c.send(FE.query("select f()"))
        var s2: FakeServer? = nil
        wait("the second read on the standby") {
            for s in standbys where s.loggedIn { if let m = s.nextMessage(), m.char == "Q" { s2 = s } }
            return s2 != nil
        }
        s2?.send(BE.rowDescription(["f"]) + BE.error("25006", "cannot execute nextval() in a read-only transaction") + BE.ready("I"))
        msgs = []
        wait("the error") {
            while let m = c.reader.next() { msgs.append(m) }
            return msgs.last?.char == "Z"
        }
        XCTAssertEqual(msgs.map { $0.char }, ["T", "E", "Z"], "\(msgs)")
        XCTAssertEqual(h.worker.routeStats(pi)[0].retries, 1)
    }

    func testRoleChangeDrainsAndRoutesToTheNewPrimary() throws {
        try startRouted()
        let c = h.login(database: "rdb")
        XCTAssertEqual(run(c, "select 1"), true)
        XCTAssertEqual(run(c, "insert into t values (1)"), false)
        let oldPrimary = h.loggedInServers, oldStandby = standbys
        // Switchover: the standby is promoted, the primary demoted.
        setRoles(primary: standbyPort, standby: h.backendPort)
        wait("idle connections of both hosts closed") {
            oldPrimary.allSatisfy { $0.closed } && oldStandby.allSatisfy { $0.closed }
        }
        XCTAssertEqual(run(c, "insert into t values (2)"), true, "the write goes to the promoted host")
        XCTAssertEqual(run(c, "select 1"), false, "the read to the demoted one")
    }
}

final class RouteLSNTests: XCTestCase {
    private func row(_ text: String?) -> [UInt8] {
        guard let text else { return [0, 1, 0xFF, 0xFF, 0xFF, 0xFF] }
        let b = Array(text.utf8)
        return [0, 1] + [UInt8(b.count >> 24), UInt8(b.count >> 16 & 0xFF), UInt8(b.count >> 8 & 0xFF), UInt8(b.count & 0xFF)] + b
    }

    func testLSNFromADataRow() {
        func lsn(_ t: String?) -> UInt64? { row(t).withUnsafeBytes { RouteClassifier.lsn(dataRow: $0) } }
        XCTAssertEqual(lsn("16/B374D848"), 0x16_B374_D848)
        XCTAssertEqual(lsn("0/0"), 0)
        XCTAssertEqual(lsn("FFFFFFFF/ffffffff"), .max)
        for bad in [nil, "", "16", "/1", "1/", "1/2/3", "G/1", "123456789/0", "1 /2"] { XCTAssertNil(lsn(bad), "\(bad ?? "NULL")") }
    }
}
