// Per-pattern query statistics and the slow log (QueryStats.swift) through a real worker loop and a
// scripted server: what the worker would report to the supervisor for SHOW QUERIES.
import XCTest
import Glibc
@testable import Worker
import Shared

final class QueryStatsTests: WorkerHarnessCase {
    private func rows() -> [QueryPatternRow] { h.worker.queryStatsSnapshot().rows }

    private func row(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> QueryPatternRow? {
        let r = rows().first { $0.text == text }
        if r == nil { XCTFail("no pattern \(text) in \(rows().map(\.text))", file: file, line: line) }
        return r
    }

    /// Reads what the server got up to and including a message of type `last`.
    private func serverReads(_ s: FakeServer, until last: Character) -> [Msg] {
        var got: [Msg] = []
        while let m = h.next(s) {
            got.append(m)
            if m.char == last { break }
        }
        return got
    }

    func testLiteralsAndSpacingMakeOnePatternWithCallsRowsAndTables() throws {
        try start()
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        for sql in ["select * from t where id = 1", "SELECT *  FROM t WHERE id = 22", "select * from t where id = 1"] {
            c.send(FE.query(sql))
            XCTAssertEqual(h.next(s)?.firstString, sql)
            s.send(BE.rowDescription(["v"]) + BE.dataRow(["x"]) + BE.dataRow(["y"]) + BE.complete("SELECT 2") + BE.ready())
            XCTAssertEqual(h.readUntilReady(c).last?.status, "I")
        }
        XCTAssertEqual(rows().count, 1)
        let r = try XCTUnwrap(row("select * from t where id = $1"))
        XCTAssertEqual(r.calls, 3)
        XCTAssertEqual(r.rows, 6)
        XCTAssertEqual(r.errors, 0)
        XCTAssertEqual(r.database, "db")
        XCTAssertEqual(r.user, "u")
        XCTAssertEqual(r.tables, [QueryTableUse(name: "t", access: 1)])
        XCTAssertEqual(r.queryid, SQLHash.pattern(Array("select * from t where id = $1".utf8)))
    }

    /// A multi-statement Query: each statement is its own call; an error ends the Query, so the
    /// statements after it are not counted.
    func testEachStatementOfASimpleQueryAndErrorsByPattern() throws {
        try start()
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        c.send(FE.query("select 1; insert into t values (5); update t set x = 2"))
        _ = h.next(s)
        s.send(BE.row("1") + BE.complete("INSERT 0 1") + BE.complete("UPDATE 3") + BE.ready())
        _ = h.readUntilReady(c)
        c.send(FE.query("select 7; insert into t values (6, 7); update t set x = 9"))
        _ = h.next(s)
        s.send(BE.row("7") + BE.error("23505", "duplicate key") + BE.ready())
        _ = h.readUntilReady(c)
        XCTAssertEqual(row("select $1")?.calls, 2)
        XCTAssertEqual(row("insert into t values ($1)")?.calls, 1)
        XCTAssertEqual(row("insert into t values ($1, $2)")?.errors, 1)
        XCTAssertEqual(row("insert into t values ($1, $2)")?.calls, 1)
        let u = try XCTUnwrap(row("update t set x = $1"))
        XCTAssertEqual(u.calls, 1, "the update after the error never ran")
        XCTAssertEqual(u.rows, 3)
        XCTAssertEqual(u.tables, [QueryTableUse(name: "t", access: 2)])
    }

    /// Extended protocol: the pattern comes from the Parse text, a call is an Execute; a named
    /// statement (rewritten for the server) is parsed once and executed many times.
    func testExtendedProtocolCountsAtExecuteForUnnamedAndNamedStatements() throws {
        try start()
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        c.send(FE.parse("", "select a from u where b = $1 and c = 'x'") + FE.bind("", "", ["1"]) + FE.execute() + FE.sync)
        _ = serverReads(s, until: "S")
        s.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["1"]) + BE.complete("SELECT 1") + BE.ready())
        _ = h.readUntilReady(c)
        c.send(FE.parse("s1", "select a from u where b = $1 and c = 'y'"))
        for i in 0..<3 {
            c.send(FE.bind("", "s1", ["\(i)"]) + FE.execute() + FE.sync)
            let got = serverReads(s, until: "S")
            var answer: [UInt8] = []
            if got.contains(where: { $0.char == "P" }) { answer += BE.parseComplete }
            s.send(answer + BE.bindComplete + BE.dataRow(["1"]) + BE.complete("SELECT 1") + BE.ready())
            _ = h.readUntilReady(c)
        }
        let r = try XCTUnwrap(row("select a from u where b = $1 and c = $2"))
        XCTAssertEqual(r.calls, 4)
        XCTAssertEqual(r.rows, 4)
        XCTAssertEqual(rows().count, 1)
    }

    /// Three extended batches pipelined in one write: the second's first Execute fails, so the
    /// server skips its second Execute up to the Sync; the third runs. Each answer ends the statement
    /// it belongs to, and the skipped one is not counted.
    func testPipelinedBatchesWithAnErrorInTheMiddle() throws {
        try start()
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        func run(_ sql: String) -> [UInt8] { FE.parse("", sql) + FE.bind("", "") + FE.execute() }
        c.send(run("select 1 from a") + FE.sync
               + run("select 1 from b") + run("select 1 from c") + FE.sync
               + run("select 1 from d") + FE.sync)
        var syncs = 0
        while syncs < 3, let m = h.next(s) { if m.char == "S" { syncs += 1 } }
        let ok = BE.parseComplete + BE.bindComplete + BE.dataRow(["1"]) + BE.complete("SELECT 1")
        s.send(ok + BE.ready()
               + BE.parseComplete + BE.bindComplete + BE.error("42P01", "relation b does not exist") + BE.ready()
               + ok + BE.ready())
        _ = h.readUntilReady(c, count: 3)
        XCTAssertEqual(row("select $1 from a")?.calls, 1)
        XCTAssertEqual(row("select $1 from a")?.errors, 0)
        XCTAssertEqual(row("select $1 from b")?.errors, 1)
        XCTAssertEqual(row("select $1 from b")?.calls, 1)
        XCTAssertNil(rows().first { $0.text == "select $1 from c" }, "skipped by the server, never called")
        XCTAssertEqual(row("select $1 from d")?.calls, 1)
        XCTAssertEqual(row("select $1 from d")?.errors, 0)
        // The server is clean again: the next statement is counted too.
        h.roundTrip(c, s, "select 1 from a")
        XCTAssertEqual(row("select $1 from a")?.calls, 2)
    }

    /// Random pipelines of simple Queries (1-3 statements) and extended batches (1-3 Executes), each
    /// statement answered or failed at random (a failure ends its Query or batch), sent in one write:
    /// the calls and errors of every pattern are exactly those of the answers.
    func testRandomPipelinesCountEveryAnsweredStatementOnce() throws {
        var rng = SeededRandom("testRandomPipelinesCountEveryAnsweredStatementOnce")
        let seed = rng.seed
        try start()
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        var calls: [String: UInt64] = [:], errors: [String: UInt64] = [:]
        for round in 0..<40 {
            var request: [UInt8] = [], reply: [UInt8] = []
            var readies = 0, messages = 0
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let n = Int.random(in: 1...3, using: &rng)
                let tables = (0..<n).map { _ in Int.random(in: 0..<5, using: &rng) }
                let failAt = Bool.random(using: &rng) ? Int.random(in: 0..<n, using: &rng) : n
                let simple = Bool.random(using: &rng)
                if simple {
                    request += FE.query(tables.map { "select \(Int.random(in: 0...99, using: &rng)) from t\($0)" }.joined(separator: "; "))
                    messages += 1
                } else {
                    for t in tables {
                        request += FE.parse("", "select \(Int.random(in: 0...99, using: &rng)) from t\(t)") + FE.bind("", "") + FE.execute()
                        messages += 3
                    }
                    request += FE.sync
                    messages += 1
                }
                for (k, t) in tables.enumerated() {
                    let pattern = "select $1 from t\(t)"
                    if k < failAt {
                        reply += (simple ? [] : BE.parseComplete + BE.bindComplete) + BE.dataRow(["1"]) + BE.complete("SELECT 1")
                        calls[pattern, default: 0] += 1
                    } else if k == failAt {
                        reply += (simple ? [] : BE.parseComplete + BE.bindComplete) + BE.error("22012", "division by zero")
                        calls[pattern, default: 0] += 1
                        errors[pattern, default: 0] += 1
                    }
                }
                reply += BE.ready()
                readies += 1
            }
            c.send(request)
            let got = h.next(s, messages)
            XCTAssertEqual(got.count, messages, "seed \(seed) round \(round)")
            s.send(reply)
            let msgs = h.readUntilReady(c, count: readies)
            XCTAssertEqual(msgs.filter { $0.char == "Z" }.count, readies, "seed \(seed) round \(round)")
        }
        var gotCalls: [String: UInt64] = [:], gotErrors: [String: UInt64] = [:]
        for r in rows() {
            gotCalls[r.text] = r.calls
            if r.errors > 0 { gotErrors[r.text] = r.errors }
        }
        XCTAssertEqual(gotCalls, calls, "seed \(seed)")
        XCTAssertEqual(gotErrors, errors, "seed \(seed)")
    }

    /// A Query larger than the 32 KiB buffer streams through uncounted, and says so.
    func testAQueryLargerThanTheBufferIsCountedAsUntracked() throws {
        try start()
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let big = "select '" + String(repeating: "x", count: 40_000) + "'"
        c.send(FE.query(big))
        XCTAssertEqual(h.next(s)?.firstString.utf8.count, big.utf8.count)
        s.send(BE.row("x") + BE.ready())
        _ = h.readUntilReady(c)
        h.roundTrip(c, s, "select 1")
        XCTAssertEqual(h.worker.queryStatsSnapshot().untracked, 1)
        XCTAssertEqual(rows().map(\.text), ["select $1"])
    }

    func testQueryStatsOffRecordsNothing() throws {
        try start(pgswift: ["query_stats": "off"])
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(c, s, "select 1")
        XCTAssertFalse(h.worker.hot.pointee.queryTracking)
        XCTAssertTrue(rows().isEmpty)
    }

    /// query_stats_max bounds the table; the eviction count says how many went.
    func testQueryStatsMaxBoundsThePatterns() throws {
        try start(pgswift: ["query_stats_max": "20"])
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        for i in 0..<100 { h.roundTrip(c, s, "select * from t\(i)") }
        let snap = h.worker.queryStatsSnapshot()
        XCTAssertLessThanOrEqual(snap.rows.count, 20)
        XCTAssertEqual(UInt64(snap.patterns) + snap.evicted, 100)
        XCTAssertGreaterThanOrEqual(snap.evicted, 80)
    }

    /// Time runs from the client's message to the end of that statement's answer.
    func testDurationsAndTheSlowLog() throws {
        let path = "/tmp/pgswift-querystats-\(Posix.getpid())-\(Clock.monotonicNanos()).log"
        defer { _ = unlink(path) }
        try start(["logfile": path], pgswift: ["log_min_duration_statement": "40"])
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        c.send(FE.query("select pg_sleep(0.05), 'secret'"))
        _ = h.next(s)
        let sent = Clock.monotonicNanos()
        h.waitUntil("50 ms to pass") { Clock.monotonicNanos() - sent >= 60_000_000 }
        s.send(BE.row("") + BE.ready())
        _ = h.readUntilReady(c)
        h.roundTrip(c, s, "select 1")
        let slow = try XCTUnwrap(row("select pg_sleep($1), $2"))
        XCTAssertGreaterThanOrEqual(slow.minMicros, 60_000)
        XCTAssertLessThan(try XCTUnwrap(row("select $1")).maxMicros, 40_000)
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let lines = text.split(separator: "\n").filter { $0.contains("duration:") }
        XCTAssertEqual(lines.count, 1, text)
        let line = String(lines.first ?? "")
        XCTAssertTrue(line.contains("db=db user=u"), line)
        XCTAssertTrue(line.contains("application_name="), line)
        XCTAssertTrue(line.contains("statement: select pg_sleep($1), $2"), line)
        XCTAssertFalse(line.contains("secret"), "never the literals: \(line)")
    }

    /// Errors by SQLSTATE class: the class of each ErrorResponse's code, per pattern.
    func testErrorsCountedBySQLStateClass() throws {
        try start()
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        for code in ["23505", "22012", "23503", "23505"] {
            c.send(FE.query("insert into t values (1)"))
            _ = h.next(s)
            s.send(BE.error(code, "failed") + BE.ready())
            _ = h.readUntilReady(c)
        }
        h.roundTrip(c, s, "insert into t values (2)")
        let r = try XCTUnwrap(row("insert into t values ($1)"))
        XCTAssertEqual(r.calls, 5)
        XCTAssertEqual(r.errors, 4)
        XCTAssertEqual(r.errorClasses, [QueryErrorClassCount(sqlClass: "23", count: 3), QueryErrorClassCount(sqlClass: "22", count: 1)])
    }

    private func slowLog(parameters: String?) throws -> [String] {
        let path = "/tmp/pgswift-queryparams-\(Posix.getpid())-\(Clock.monotonicNanos()).log"
        defer { _ = unlink(path) }
        var settings = ["log_min_duration_statement": "0"]
        if let parameters { settings["log_statement_parameters"] = parameters }
        try start(["logfile": path], pgswift: settings)
        let c = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        c.send(FE.query("select 1, 'simple secret'; select 2"))
        _ = h.next(s)
        s.send(BE.row("1") + BE.complete("SELECT 1") + BE.row("2") + BE.complete("SELECT 1") + BE.ready())
        _ = h.readUntilReady(c)
        c.send(FE.parse("", "select a from u where b = $1 and c = $2 and d = $3") + FE.bind("", "", ["42", "it's secret", nil])
               + FE.execute() + FE.sync)
        _ = serverReads(s, until: "S")
        s.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["1"]) + BE.complete("SELECT 1") + BE.ready())
        _ = h.readUntilReady(c)
        var lines: [String] = []
        h.waitUntil("3 slow-log lines") {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            lines = text.split(separator: "\n").filter { $0.contains("duration:") }.map(String.init)
            return lines.count >= 3
        }
        return lines
    }

    /// log_statement_parameters = on: the slow-log line carries the simple statement's own text and
    /// the Bind values; off (the default, and explicitly): never.
    func testSlowLogParametersOnlyWhenOn() throws {
        let on = try slowLog(parameters: "on")
        XCTAssertEqual(on.count, 3, "\(on)")
        XCTAssertTrue(on[0].contains("statement: select $1, $2  text: select 1, 'simple secret'"), on[0])
        XCTAssertTrue(on[1].contains("statement: select $1  text: select 2"), on[1])
        XCTAssertTrue(on[2].hasSuffix("statement: select a from u where b = $1 and c = $2 and d = $3  parameters: $1 = '42', $2 = 'it''s secret', $3 = NULL"), on[2])
        for setting in [nil, "off"] {
            let off = try slowLog(parameters: setting)
            XCTAssertEqual(off.count, 3, "\(off)")
            for line in off {
                XCTAssertFalse(line.contains("secret") || line.contains("parameters:") || line.contains("text:"), line)
            }
        }
    }
}
