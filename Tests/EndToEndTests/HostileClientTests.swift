// End to end: clients that send what pgswift must skip, stream or refuse (errors answered by pgswift,
// messages larger than the I/O buffer, lying lengths, unknown types) and then hang up never freeze
// the pool (issue 14), and large extended-protocol messages pass (issue 15).
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Builders for the extended-protocol messages these tests send by hand.
private enum Ext {
    static func int16(_ v: Int) -> [UInt8] { [UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }

    static func parse(_ name: String, _ sql: String) -> [UInt8] {
        WireEncode.message("P", WireEncode.cString(name) + WireEncode.cString(sql) + int16(0))
    }

    /// A Bind with text parameters (nil = NULL) and text results.
    static func bind(portal: String = "", _ statement: String, _ params: [[UInt8]?] = []) -> [UInt8] {
        var body = WireEncode.cString(portal) + WireEncode.cString(statement) + int16(0) + int16(params.count)
        for p in params {
            if let p { body += WireEncode.int32(UInt32(p.count)) + p } else { body += WireEncode.int32(0xFFFF_FFFF) }
        }
        return WireEncode.message("B", body + int16(0))
    }

    static func describePortal() -> [UInt8] { WireEncode.message("D", [UInt8(ascii: "P"), 0]) }
    static func execute() -> [UInt8] { WireEncode.message("E", [0] + WireEncode.int32(0)) }
    static let sync: [UInt8] = WireEncode.message("S", [])

    /// A simple query of about `size` bytes.
    static func bigQuery(_ size: Int) -> [UInt8] {
        WireEncode.query("select '" + String(repeating: "x", count: size) + "'")
    }

    /// A named Parse whose length word says `claimed` bytes while the real message is much shorter:
    /// what follows it (the next messages) is read as its body.
    static func lyingParse(claimed: Int) -> [UInt8] {
        let real = parse("lie", "select 1")
        return [real[0]] + WireEncode.int32(UInt32(claimed)) + Array(real[5...])
    }
}

final class HostileClientTests: XCTestCase {
    private var pg: PostgresServer!
    private var px: Pgswift!

    override func setUpWithError() throws {
        pg = try PostgresServer.shared()
        TxFixtures.terminateLeftovers(pg)
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover backends of \(TxFixtures.role)")
        // Transaction mode, max_prepared_statements at its default (tracking on), pool_size 2; a statement
        // name in use or unknown gets PostgreSQL's error (pgswift's extension), which these cases test.
        px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 2, postgresqlErrors: true))
    }

    override func tearDown() {
        px?.stop()
        px = nil
    }

    private func login(timeout: Double = 30) throws -> WireClient {
        try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb", timeout: timeout)
    }

    /// Messages up to and including the next ReadyForQuery (or until the peer closes: nil).
    private func readUntilReady(_ c: WireClient, timeout: Double = 10) throws -> [WireMessage]? {
        var out: [WireMessage] = []
        while true {
            guard let m = try c.readMessage(timeout: timeout) else { return nil }
            out.append(m)
            if m.typeChar == "Z" { return out }
        }
    }

    /// Client sockets on pgswift's port the peer has closed but pgswift has not (CLOSE-WAIT).
    private func closeWaitSockets() throws -> [String] {
        let r = try runCommand(["ss", "-tan", "state", "close-wait", "( sport = :\(px.port) )"], timeout: 10)
        return r.stdout.split(separator: "\n").dropFirst().map(String.init)  // first line: the header
    }

    /// After hostile clients are gone: no CLOSE-WAIT socket stays, and a normal client is answered in 5 s.
    private func assertPoolUsable(_ label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        var left: [String] = []
        let drained = try waitUntil(timeout: 10, poll: 0.1) {
            left = try closeWaitSockets()
            return left.isEmpty
        }
        XCTAssertTrue(drained, "\(label): sockets left in CLOSE-WAIT:\n\(left.joined(separator: "\n"))\nlog:\n\(px.log().suffix(3000))",
                      file: file, line: line)
        let started = monotonicNow()
        let c = try login(timeout: 5)
        defer { c.close() }
        let rows = try c.query("select 42")
        XCTAssertEqual(rows.first?.first ?? nil, "42", "\(label): rows \(rows); log:\n\(px.log().suffix(3000))",
                       file: file, line: line)
        let took = monotonicNow() - started
        XCTAssertLessThan(took, 5, "\(label): a normal client waited \(took) s; log:\n\(px.log().suffix(3000))",
                          file: file, line: line)
    }

    // MARK: Issue 14: skip to Sync, then hang up

    /// 25 clients send `bytes`, wait for their first ErrorResponse (so pgswift is past the failing
    /// message and skipping when they leave; at most 2 s) and close, against a pool of 2: none may
    /// freeze the pool.
    private func assertNoFreeze(_ label: String, _ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws {
        var clients: [WireClient] = []
        for _ in 0..<25 {
            let c = try login()
            try c.socket.send(bytes)
            clients.append(c)
        }
        for c in clients {
            let deadline = monotonicNow() + 2
            while monotonicNow() < deadline, let m = try? c.readMessage(timeout: max(0.1, deadline - monotonicNow())),
                  m.typeChar != "E" {}
            c.socket.close()
        }
        try assertPoolUsable(label, file: file, line: line)
        XCTAssertTrue(px.isRunning, "pgswift died; log:\n\(px.log().suffix(3000))", file: file, line: line)
    }

    /// Finding 1: Bind to an unknown statement, a Query larger than the 32 KiB buffer, Sync, close.
    func testUnknownBindThenLargeQueryThenCloseNeverFreezesThePool() throws {
        try assertNoFreeze("unknown Bind + 40 kB Query + Sync", Ext.bind("nosuch") + Ext.bigQuery(40_000) + Ext.sync)
    }

    /// The same skip after an error pgswift raises for a duplicate name.
    func testDuplicateParseThenLargeQueriesThenCloseNeverFreezesThePool() throws {
        try assertNoFreeze("duplicate Parse + 30 kB and 40 kB Queries + Sync",
                           Ext.parse("dup", "select 1") + Ext.parse("dup", "select 2") + Ext.bigQuery(30_000)
                            + Ext.bigQuery(40_000) + Ext.sync)
    }

    /// A named Parse whose length lies (it swallows the start of two 30 kB queries, and what follows
    /// is read as garbage headers), within and beyond the buffer size.
    func testLyingParseLengthThenCloseNeverFreezesThePool() throws {
        for claimed in [32_000, 40_000] {
            try assertNoFreeze("lying Parse (\(claimed)) + two 30 kB Queries + Sync",
                               Ext.lyingParse(claimed: claimed) + Ext.bigQuery(30_000) + Ext.bigQuery(30_000) + Ext.sync)
        }
        // A name already in use, whose length swallows the first 30 kB query exactly: 42P05, then the
        // skip meets a Query larger than the buffer.
        let swallowed = Ext.bigQuery(30_000)
        let real = Ext.parse("lie", "select 1")
        let lying = [real[0]] + WireEncode.int32(UInt32(real.count - 1 + swallowed.count)) + Array(real[5...]) + swallowed
        try assertNoFreeze("Parse + lying duplicate Parse swallowing a 30 kB Query + 40 kB Query + Sync",
                           real + lying + Ext.bigQuery(40_000) + Ext.sync)
    }

    /// After an error PostgreSQL raises in the extended protocol it skips a Query up to the Sync too:
    /// one ReadyForQuery answers both. Clients that stay connected after that must not keep their
    /// servers (pool_size 2, three such clients, then a normal one is served).
    func testQuerySkippedByTheServerDoesNotPinTheServer() throws {
        // A Parse that fails on the server; a named Parse whose length swallows exactly the next Query.
        let swallowed = Ext.bigQuery(30_000)
        let exact = Ext.parse("lie", "select 1")
        let lying = [exact[0]] + WireEncode.int32(UInt32(exact.count - 1 + swallowed.count)) + Array(exact[5...]) + swallowed
        var stay: [WireClient] = []
        for bytes in [Ext.parse("", "selec 1") + Ext.bigQuery(40_000) + Ext.sync,
                      Ext.parse("bad", "selec 1") + WireEncode.query("select 1") + Ext.sync,
                      lying + Ext.bigQuery(30_000) + Ext.sync] {
            let c = try login()
            try c.socket.send(bytes)
            let answer = try readUntilReady(c)
            XCTAssertEqual(answer?.map(\.typeChar) ?? [], ["E", "Z"])
            stay.append(c)
        }
        try assertPoolUsable("clients staying after a server-side skip")
        for c in stay { XCTAssertEqual(try c.query("select 3").first?.first ?? nil, "3") }
    }

    /// What PostgreSQL reads without answering must not leave a server owed a ReadyForQuery (and so
    /// pinned to its client in transaction mode): a Sync sent during COPY FROM STDIN (libpq sends one
    /// with an extended-protocol COPY, and another after CopyDone; or one sent before a row the COPY
    /// fails on), and a Query sent after an extended-protocol error was already answered.
    /// Clients doing each stay connected; pool_size 2, so another is served only if none pins. And a
    /// CopyDone sent while no COPY runs changes nothing (the server ignores it).
    func testCopySyncsAndSkippedQueriesNeverPinTheServer() throws {
        try copySyncsAndSkippedQueries(rewriting: true)
        // The same without prepared-statement support (max_prepared_statements = 0): still tracked.
        px.stop()
        var s = try TxFixtures.settings(pg, workers: 1, poolSize: 2, postgresqlErrors: true)
        s.settings.append(("max_prepared_statements", "0"))
        px = try Pgswift.start(s)
        try copySyncsAndSkippedQueries(rewriting: false)
    }

    private func copySyncsAndSkippedQueries(rewriting: Bool) throws {
        let table = "hostile_copy_\(randomAlphanumeric(6).lowercased())"
        _ = try pg.adminQuery(["create table \(table) (a int)", "grant all on \(table) to \(TxFixtures.role)"],
                              database: "testdb")
        func types(_ ms: [WireMessage]?) -> [String] {
            (ms ?? []).map { $0.typeChar == "E" ? "E" + (WireErrorFields(body: $0.body).sqlstate ?? "?") : String($0.typeChar) }
        }
        func readUntil(_ c: WireClient, _ type: Character) throws -> [WireMessage] {
            var out: [WireMessage] = []
            while let m = try c.readMessage(timeout: 10) {
                out.append(m)
                if m.typeChar == type { return out }
            }
            throw E2EError("closed before \(type) after \(types(out)); log:\n\(px.log().suffix(3000))")
        }
        let copyData = WireEncode.message("d", Array("7\n".utf8))
        let copyDone = WireEncode.message("c", [])
        var stay: [WireClient] = []

        // 1. COPY through the extended protocol, as libpq sends it: its first Sync is read by the COPY.
        let a = try login()
        try a.socket.send(Ext.parse("", "copy \(table) (a) from stdin") + Ext.bind("") + Ext.execute() + Ext.sync)
        XCTAssertEqual(types(try readUntil(a, "G")), ["1", "2", "G"])
        try a.socket.send(copyData + copyDone + Ext.sync)
        XCTAssertEqual(types(try readUntil(a, "Z")), ["C", "Z"])
        stay.append(a)

        // 2. A Sync during a simple-protocol COPY (read by it), then a row it fails on (22P02).
        let b = try login()
        try b.socket.send(WireEncode.query("copy \(table) (a) from stdin"))
        XCTAssertEqual(types(try readUntil(b, "G")), ["G"])
        try b.socket.send(Ext.sync + WireEncode.message("d", Array("x\n".utf8)))
        XCTAssertEqual(types(try readUntil(b, "Z")), ["E22P02", "Z"])
        stay.append(b)

        // 3. An extended-protocol error answered first; the Query sent after it is skipped to the Sync.
        let c = try login()
        try c.socket.send(Ext.parse("", "selec 1"))
        try c.socket.send(Ext.bind("") + Ext.execute() + WireEncode.query("select 1"))
        try c.socket.send(WireEncode.message("H", []))  // Flush: the error comes before the Sync is sent
        XCTAssertEqual(types(try readUntil(c, "E")), ["E42601"])
        try c.socket.send(WireEncode.query("select 2") + Ext.sync)
        XCTAssertEqual(types(try readUntil(c, "Z")), ["Z"])
        stay.append(c)

        // 4. A CopyDone while no COPY runs is ignored by the server: the error of the Query after it is
        //    not an extended-protocol error, so nothing is skipped and every answer still comes.
        let d = try login()
        try d.socket.send(copyDone + WireEncode.query("select 1/0") + Ext.sync + WireEncode.query("select 7"))
        XCTAssertEqual(types(try readUntil(d, "Z")), ["E22012", "Z"])
        XCTAssertEqual(types(try readUntil(d, "Z")), ["Z"])
        XCTAssertEqual(types(try readUntil(d, "Z")), ["T", "D", "C", "Z"])
        stay.append(d)

        // 5. A Sync after CopyData that the COPY fails on (22P02): the server reads that Sync after the
        //    error and answers it, which pgswift cannot know in advance (the fuzzer's finding): every
        //    answer still reaches this client, whose server stays with it and is never reused.
        let e = try login()
        try e.socket.send(WireEncode.query("copy \(table) (a) from stdin") + WireEncode.message("d", Array("x\n".utf8))
                          + Ext.sync + WireEncode.message("f", Array("no\0".utf8)) + Ext.sync + WireEncode.query("select 5"))
        var got: [WireMessage] = []
        while !(got.last?.typeChar == "Z" && got.contains { $0.typeChar == "D" }) {
            got += try readUntil(e, "Z")
        }
        XCTAssertEqual(types(got), ["G", "E22P02", "Z", "Z", "Z", "T", "D", "C", "Z"])
        XCTAssertTrue(px.log().contains("cannot be counted"), "log:\n\(px.log().suffix(3000))")
        stay.append(e)

        // 6. A Flush with a body: PostgreSQL fails it (08P01) as an extended-protocol message and skips
        //    the Query after it to the Sync. Counting that Query's ReadyForQuery kept the server linked
        //    for good (with e's, the pool of 2 had none left for the check below).
        let f = try login()
        try f.socket.send(WireEncode.message("H", [0, 0]) + WireEncode.query("select 1") + Ext.sync
                          + WireEncode.query("select 6"))
        XCTAssertEqual(types(try readUntil(f, "Z")), ["E08P01", "Z"])
        XCTAssertEqual(types(try readUntil(f, "Z")), ["T", "D", "C", "Z"])
        stay.append(f)

        // 7. A Bind to an unknown statement amid a COPY, which pgswift answers (26000) itself when it
        //    rewrites names (without, PostgreSQL ends the session on it): the Sync behind pgswift's own
        //    answer was read by the COPY all the same, and nothing stays owed when the last answer is in.
        if rewriting {
            let g = try login()
            try g.socket.send(WireEncode.query("copy \(table) (a) from stdin") + Ext.bind("nosuchstmt") + Ext.sync
                              + WireEncode.message("f", Array("no\0".utf8)) + Ext.sync + WireEncode.query("select 8"))
            var gotG: [WireMessage] = []
            while !(gotG.last?.typeChar == "Z" && gotG.contains { $0.typeChar == "D" }) {
                gotG += try readUntil(g, "Z")
            }
            XCTAssertEqual(gotG.filter { $0.typeChar == "D" }.count, 1, "\(types(gotG))")
            stay.append(g)
        }

        try assertPoolUsable("clients staying after COPY Syncs and skipped queries")
        for (i, k) in stay.enumerated() {
            XCTAssertEqual(try k.query("select \(i)").first?.first ?? nil, "\(i)", "client \(i); log:\n\(px.log().suffix(3000))")
        }
        let n = try pg.adminQuery("select count(*) from \(table)", database: "testdb")
        XCTAssertTrue(n.contains("1"), "rows copied: \(n)")
        _ = try pg.adminQuery("drop table \(table)", database: "testdb")
    }

    /// A Parse the server fails, or skips after an earlier error, defines nothing (as in PostgreSQL):
    /// the name can be parsed again, and a Bind to it before that gets 26000.
    func testFailedOrSkippedParseDefinesNothing() throws {
        let c = try login()
        defer { c.close() }
        func run(_ bytes: [UInt8]) throws -> [WireMessage] {
            try c.socket.send(bytes)
            guard let m = try readUntilReady(c) else { throw E2EError("closed; log:\n\(px.log().suffix(3000))") }
            return m
        }
        func states(_ ms: [WireMessage]) -> [String] {
            ms.map { $0.typeChar == "E" ? "E" + (WireErrorFields(body: $0.body).sqlstate ?? "?") : String($0.typeChar) }
        }
        let first = try run(Ext.parse("ok", "select 1") + Ext.parse("bad", "select * from no_such_table")
                            + Ext.parse("skipped", "select 2") + Ext.sync)
        XCTAssertEqual(states(first), ["1", "E42P01", "Z"])
        XCTAssertEqual(states(try run(Ext.bind("skipped") + Ext.execute() + Ext.sync)), ["E26000", "Z"])
        XCTAssertEqual(states(try run(Ext.bind("bad") + Ext.execute() + Ext.sync)), ["E26000", "Z"])
        let again = try run(Ext.parse("bad", "select 3") + Ext.parse("skipped", "select 4") + Ext.bind("bad") + Ext.execute()
                            + Ext.bind("skipped") + Ext.execute() + Ext.bind("ok") + Ext.execute() + Ext.sync)
        XCTAssertEqual(states(again), ["1", "1", "2", "D", "C", "2", "D", "C", "2", "D", "C", "Z"])
    }

    /// With a cache of one statement per server, an eviction Close that the server skips (an error
    /// came first in the pipeline) leaves the evicted statement known on that server: it is used, not
    /// parsed again (which the server would refuse with 42P05).
    func testEvictionSkippedAfterAnErrorKeepsTheStatement() throws {
        px.stop()
        var s = try TxFixtures.settings(pg, workers: 1, poolSize: 1, postgresqlErrors: true)
        s.settings.append(("max_prepared_statements", "1"))
        px = try Pgswift.start(s)
        let c = try login()
        defer { c.close() }
        func run(_ bytes: [UInt8]) throws -> [String] {
            try c.socket.send(bytes)
            guard let m = try readUntilReady(c) else { throw E2EError("closed; log:\n\(px.log().suffix(3000))") }
            return m.map { $0.typeChar == "E" ? "E" + (WireErrorFields(body: $0.body).sqlstate ?? "?") : String($0.typeChar) }
        }
        XCTAssertEqual(try run(Ext.parse("a", "select $1::int + 1") + Ext.sync), ["1", "Z"])
        // The Bind fails on the server (no parameter); "c" evicts "a" with a Close the server skips.
        XCTAssertEqual(try run(Ext.bind("a") + Ext.parse("c", "select 3") + Ext.sync), ["E08P01", "Z"])
        XCTAssertEqual(try run(Ext.bind("a", [Array("41".utf8)]) + Ext.execute() + Ext.sync), ["2", "D", "C", "Z"])
        XCTAssertEqual(try run(Ext.parse("c", "select 3") + Ext.bind("c") + Ext.execute() + Ext.sync),
                       ["1", "2", "D", "C", "Z"])
        // A statement whose own Parse failed is not taken for present when its eviction is skipped:
        // once the table exists, the same text is parsed again (not answered from a wrong cache).
        let table = "hostile_late_\(getpid())"
        _ = try? pg.adminQuery("drop table if exists \(table)", database: "testdb")
        defer { _ = try? pg.adminQuery("drop table if exists \(table)", database: "testdb") }
        XCTAssertEqual(try run(Ext.parse("b", "select count(*) from \(table)") + Ext.parse("d", "select 4") + Ext.sync),
                       ["E42P01", "Z"])
        _ = try pg.adminQuery(["create table \(table) (i int)", "grant select on \(table) to \(TxFixtures.role)"],
                              database: "testdb")
        XCTAssertEqual(try run(Ext.parse("b", "select count(*) from \(table)") + Ext.bind("b") + Ext.execute() + Ext.sync),
                       ["1", "2", "D", "C", "Z"])
    }

    /// Clients that send a query and reset the connection at once: the answer pgswift cannot deliver
    /// is dropped with the client, never handed to whoever gets the server next.
    func testUndeliveredAnswersNeverReachTheNextClient() throws {
        px.stop()
        px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1, postgresqlErrors: true))
        let normal = try login()
        defer { normal.close() }
        for round in 0..<30 {
            var gone: [WireClient] = []
            for _ in 0..<5 {
                let c = try login()
                try c.socket.send(WireEncode.query("select 'stale'") + Ext.parse("", "select 'stale2'") + Ext.bind("")
                                  + Ext.execute() + Ext.sync)
                gone.append(c)
            }
            for c in gone {
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                _ = setsockopt(c.socket.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                c.socket.close()
            }
            let rows = try normal.query("select \(round)")
            XCTAssertEqual(rows.first?.first ?? nil, String(round), "round \(round): \(rows); log:\n\(px.log().suffix(2000))")
            if rows.first?.first ?? nil != String(round) { break }
        }
    }

    /// The same sequence from a client that stays: it gets what PostgreSQL gives (ErrorResponse
    /// 26000, the Query skipped, ReadyForQuery after its Sync), and the connection goes on working.
    func testSkippedLargeQueryIsAnsweredLikePostgres() throws {
        let c = try login()
        defer { c.close() }
        try c.socket.send(Ext.bind("nosuch") + Ext.bigQuery(40_000) + Ext.sync)
        guard let answer = try readUntilReady(c) else { return XCTFail("connection closed; log:\n\(px.log().suffix(3000))") }
        XCTAssertEqual(answer.map(\.typeChar), ["E", "Z"], "answer: \(answer.map(\.typeChar))")
        if let e = answer.first, e.typeChar == "E" {
            XCTAssertEqual(WireErrorFields(body: e.body).sqlstate, "26000")
        }
        XCTAssertEqual(try c.query("select 'still here'").first?.first ?? nil, "still here")

        // A skipped message far larger than the buffer, in pieces, then Sync.
        try c.socket.send(Ext.bind("nosuch") + Ext.bigQuery(200_000) + Ext.bigQuery(100_000) + Ext.sync)
        let again = try readUntilReady(c)
        XCTAssertEqual(again?.map(\.typeChar) ?? [], ["E", "Z"])
        XCTAssertEqual(try c.query("select 2").first?.first ?? nil, "2")
    }

    /// A client whose input waits behind a server that does not read (a long query, then more than
    /// the socket buffers hold) and that then vanishes (a reset: no EOF can be read behind the data)
    /// is closed, and its server freed, within seconds.
    func testHungUpClientBehindBusyServerIsReleased() throws {
        let chunk = Ext.bigQuery(100_000)
        for _ in 0..<3 {
            let c = try login()
            try c.socket.send(WireEncode.query("select pg_sleep(600)"))
            let fd = c.socket.fd
            // Send without blocking until nothing more is taken for a second: pgswift stopped reading.
            var stalledSince = monotonicNow()
            var off = 0
            while monotonicNow() - stalledSince < 1 {
                let n = chunk[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                if n > 0 {
                    off = (off + n) % chunk.count
                    stalledSince = monotonicNow()
                } else {
                    XCTAssertTrue(errno == EAGAIN || errno == EINTR, "send: \(String(cString: strerror(errno)))")
                    var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&pfd, 1, 200)
                }
            }
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            c.socket.close()
        }
        try assertPoolUsable("clients gone behind busy servers")
        XCTAssertTrue(waitUntil(timeout: 20, poll: 0.2) {
            (try? TxFixtures.backends(pg).contains { $0.query.hasPrefix("select pg_sleep(600)") }) == false
        }, "the long queries were not cancelled: \((try? TxFixtures.backends(pg)) ?? [])")
    }

    /// Finding 5: an unknown message type gets one FATAL 08P01 and no server is linked for it (the
    /// pool's server, there since the first login, is the same backend before and after).
    func testUnknownMessageTypeGetsOneFatalAndNoServer() throws {
        let first = try login()
        XCTAssertEqual(try first.query("select 1").first?.first ?? nil, "1")
        first.close()
        let before = try TxFixtures.backends(pg).map(\.pid)
        XCTAssertFalse(before.isEmpty)
        for type in ["Z", "p", "\u{1}"] {
            let c = try login()
            try c.socket.send(WireEncode.message(Character(type), [1, 2, 3]))
            let (data, closed) = c.socket.readUntilClosed(timeout: 15)
            XCTAssertTrue(closed, "connection still open after message type \(type.utf8.first!)")
            var messages: [WireMessage] = []
            var i = 0
            while i + 5 <= data.count {
                let len = Int(data[i + 1]) << 24 | Int(data[i + 2]) << 16 | Int(data[i + 3]) << 8 | Int(data[i + 4])
                guard len >= 4, i + 1 + len <= data.count else { break }
                messages.append(WireMessage(type: data[i], body: Array(data[(i + 5)..<(i + 1 + len)])))
                i += 1 + len
            }
            XCTAssertEqual(messages.map(\.typeChar), ["E"], "answer to type \(type.utf8.first!): \(data.count) bytes")
            if let m = messages.first {
                let e = WireErrorFields(body: m.body)
                XCTAssertEqual(e.sqlstate, "08P01")
                XCTAssertEqual(e.severity, "FATAL")
                XCTAssertEqual(e.message, "invalid frontend message type \(type.utf8.first!)")
            }
        }
        XCTAssertEqual(try TxFixtures.backends(pg).map(\.pid), before,
                       "a server was linked or launched for an unknown message type")
        try assertPoolUsable("unknown message types")
    }

    // MARK: Issue 15: extended-protocol messages larger than the buffer

    /// Named and unnamed Binds with a 100 kB parameter, and a named Parse whose text is 50 kB,
    /// pass through with tracking on; an unknown statement with a large Bind gets 26000.
    func testLargeBindAndParseStream() throws {
        let c = try login()
        defer { c.close() }
        let value = (0..<100_000).map { i in UInt8(ascii: "a") + UInt8(i % 26) }
        func run(_ bytes: [UInt8]) throws -> [WireMessage] {
            try c.socket.send(bytes)
            guard let m = try readUntilReady(c) else { throw E2EError("closed; log:\n\(px.log().suffix(3000))") }
            return m
        }
        func dataRow(_ ms: [WireMessage]) -> [UInt8]? {
            guard let d = ms.first(where: { $0.typeChar == "D" }), d.body.count >= 6 else { return nil }
            return Array(d.body[6...])
        }
        // Named: Parse, then a Bind larger than the buffer (twice: the second finds the statement known).
        for round in 0..<2 {
            var bytes = round == 0 ? Ext.parse("s_text", "select $1::text") : []
            bytes += Ext.bind("s_text", [value]) + Ext.execute() + Ext.sync
            let ms = try run(bytes)
            XCTAssertFalse(ms.contains { $0.typeChar == "E" }, "named round \(round): \(ms.map(\.typeChar))")
            XCTAssertEqual(dataRow(ms), value, "named round \(round)")
        }
        // Unnamed.
        let unnamed = try run(Ext.parse("", "select $1::text") + Ext.bind("", [value]) + Ext.describePortal()
                              + Ext.execute() + Ext.sync)
        XCTAssertEqual(dataRow(unnamed), value, "unnamed: \(unnamed.map(\.typeChar))")
        // A named Parse larger than the buffer.
        let text = String(repeating: "y", count: 50_000)
        let bigParse = try run(Ext.parse("s_big", "select '\(text)'::text") + Ext.bind("s_big") + Ext.execute() + Ext.sync)
        XCTAssertFalse(bigParse.contains { $0.typeChar == "E" }, "large named Parse: \(bigParse.map(\.typeChar))")
        XCTAssertEqual(dataRow(bigParse), Array(text.utf8))
        let reuse = try run(Ext.bind("s_big") + Ext.execute() + Ext.sync)
        XCTAssertEqual(dataRow(reuse), Array(text.utf8), "large named Parse reused")
        // Unknown statement, large Bind: the error, then ReadyForQuery.
        let unknown = try run(Ext.bind("nosuch", [value]) + Ext.execute() + Ext.sync)
        XCTAssertEqual(unknown.map(\.typeChar), ["E", "Z"])
        XCTAssertEqual(unknown.first.map { WireErrorFields(body: $0.body).sqlstate } ?? nil, "26000")
        XCTAssertEqual(try c.query("select 'ok'").first?.first ?? nil, "ok")
    }

    // MARK: Issue 14 (found by the fuzzer): a server dying inside a message

    /// The server dies while pgswift forwards one of its messages piecemeal (a 64 MB DataRow to a
    /// client that does not read): the client gets what the server sent, then the socket closes. No
    /// ErrorResponse is spliced into the DataRow (it would be read as row data).
    func testServerDyingInsideAMessageClosesWithoutSplicingAnError() throws {
        let c = try login()
        defer { c.socket.close() }
        try c.socket.send(WireEncode.query("select repeat('x', 64000000) as big"))
        // The socket buffers on both sides fill, pgswift stops reading, the backend blocks writing.
        var pid = ""
        XCTAssertTrue(waitUntil(timeout: 60, poll: 0.1) {
            pid = (try? pg.adminQuery("""
                select pid from pg_stat_activity where query like 'select repeat(%' and wait_event = 'ClientWrite'
                """)) ?? ""
            return !pid.isEmpty
        }, "the backend never blocked writing; log:\n\(px.log().suffix(3000))")
        try pg.adminQuery("select pg_terminate_backend(\(pid))")
        let (data, closed) = c.socket.readUntilClosed(timeout: 120)
        XCTAssertTrue(closed, "pgswift kept the client open after its server died; log:\n\(px.log().suffix(3000))")
        // Walk the stream: RowDescription, then a DataRow cut short by the close, and nothing else.
        var at = 0
        var kinds: [Character] = []
        var cutShort = false
        while at + 5 <= data.count {
            let len = Int(data[at + 1]) << 24 | Int(data[at + 2]) << 16 | Int(data[at + 3]) << 8 | Int(data[at + 4])
            kinds.append(Character(UnicodeScalar(data[at])))
            if at + 1 + len > data.count { cutShort = true; break }
            at += 1 + len
        }
        XCTAssertEqual(kinds, ["T", "D"], "messages seen: \(kinds)")
        XCTAssertTrue(cutShort, "the DataRow was complete: the server was not killed inside it")
        let marker = Array("server conn crashed".utf8)
        let spliced = data.count >= marker.count && (0...(data.count - marker.count)).contains { i in
            data[i] == marker[0] && Array(data[i..<(i + marker.count)]) == marker
        }
        XCTAssertFalse(spliced, "pgswift wrote its error inside the DataRow")
        XCTAssertTrue(px.isRunning)
        try assertPoolUsable("server died inside a message")
    }

    /// A sequence the fuzzer froze a pool with (seed 20261204, input 149524): Bind to an unknown
    /// statement, Execute, Sync; then a real Parse/Bind/Execute, a Query exactly the buffer's size, a
    /// FunctionCall (for a function that does not exist) and Sync. Every Sync gets its
    /// ReadyForQuery, and the pool stays usable after 25 clients send it and hang up.
    func testFuzzerSequenceWithFunctionCallIsAnsweredToTheEnd() throws {
        let filler = 32_768 - 5 - 1 - "select ''".utf8.count
        let query = WireEncode.query("select '" + String(repeating: "q", count: filler) + "'")
        XCTAssertEqual(query.count, 32_768)
        let call = WireEncode.message("F", WireEncode.int32(4_000_000_000) + Ext.int16(0) + Ext.int16(0) + Ext.int16(0))
        let bytes = Ext.bind("nosuch") + Ext.execute() + Ext.sync
            + Ext.parse("", "select 1") + Ext.bind("") + Ext.execute() + query + call + Ext.sync
        let c = try login()
        defer { c.close() }
        try c.socket.send(bytes)
        var readies = 0
        var kinds: [Character] = []
        while readies < 4 {  // Sync, Query, FunctionCall, Sync
            guard let m = try c.readMessage(timeout: 10) else { XCTFail("closed after \(kinds)"); return }
            kinds.append(m.typeChar)
            if m.typeChar == "Z" { readies += 1 }
        }
        XCTAssertEqual(kinds.first, "E", "\(kinds)")
        XCTAssertEqual(try c.query("select 'after'").first?.first ?? nil, "after", "\(kinds)")
        try assertNoFreeze("fuzzer sequence with FunctionCall", bytes)
    }

    /// A sequence the fuzzer stalled a session with: a Query without its terminating NUL (PostgreSQL:
    /// 08P01 "invalid string in message", then ReadyForQuery), a CopyData of 222,601 zero bytes outside
    /// any COPY (ignored by PostgreSQL), CopyFail (ignored), Sync and a Query: every Sync and Query gets
    /// its ReadyForQuery and the last Query its row.
    func testUnterminatedQueryThenLargeCopyDataIsAnsweredToTheEnd() throws {
        for round in 0..<26 {
            let filler: UInt8 = round == 0 ? UInt8(ascii: "x") : 0
            let c = try login()
            defer { c.close() }
            let badQuery = WireEncode.message("Q", Array("select 1".utf8))
            let copyData = WireEncode.message("d", [UInt8](repeating: filler, count: 222_601))
            let copyFail = WireEncode.message("f", WireEncode.cString("fuzz"))
            try c.socket.send(badQuery + copyData + copyFail + Ext.sync + WireEncode.query("ROLLBACK; select 'tail'"))
            var kinds: [Character] = []
            var readies = 0
            var tail: String? = nil
            while readies < 3 {
                guard let m = try c.readMessage(timeout: 10) else { XCTFail("round \(round): closed after \(kinds)"); return }
                kinds.append(m.typeChar)
                if m.typeChar == "Z" { readies += 1 }
                if m.typeChar == "D" { tail = String(decoding: m.body.dropFirst(6), as: UTF8.self) }
            }
            XCTAssertEqual(kinds.first, "E", "round \(round): \(kinds)")
            XCTAssertEqual(tail, "tail", "round \(round): \(kinds)")
            XCTAssertEqual(try c.query("select 'after'").first?.first ?? nil, "after", "round \(round): \(kinds)")
        }
        try assertPoolUsable("unterminated query then large CopyData")
    }
}
