// End to end: cancelling a running query through pgswift (psql's Ctrl-C path), with several workers.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class CancelTests: XCTestCase {
    func testCancelWithTwoWorkers() throws {
        try checkCancel(workers: 2, rounds: 6)
    }

    func testCancelWithFourWorkers() throws {
        try checkCancel(workers: 4, rounds: 6)
    }

    /// psql runs `select pg_sleep(30)` through pgswift; once pg_stat_activity shows it running, psql
    /// gets SIGINT and sends a CancelRequest on a new connection, which SO_REUSEPORT may hand to any
    /// worker. The query must end with SQLSTATE 57014 within 5 s, every round; a bystander running
    /// its own pg_sleep meanwhile must not be cancelled (the cancel reaches the right backend).
    private func checkCancel(workers: Int, rounds: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends", file: file, line: line)
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: workers, poolSize: 4))
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let target = TxFixtures.target(px)
        let dir = try makeTempDirectory(prefix: "cancel")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let bystander = try startSleeper(target, tag: "bystander", seconds: 300, dir: dir)
        defer { bystander.process.terminate(SIGKILL, grace: 0) }
        XCTAssertTrue(Self.waitUntilRunning(pg, tag: "bystander"), "the bystander's query never started: " +
                      bystander.process.stderrText(), file: file, line: line)

        var timings: [Double] = []
        for round in 0..<rounds {
            let tag = "cancel-w\(workers)-\(round)"
            let victim = try startSleeper(target, tag: tag, seconds: 30, dir: dir)
            defer { victim.process.terminate(SIGKILL, grace: 0) }
            XCTAssertTrue(Self.waitUntilRunning(pg, tag: tag), "round \(round): the query never started: " +
                          "\(victim.process.stderrText())\nlog:\n\(px.log().suffix(3000))", file: file, line: line)
            let elapsed = try cancelAndWait(victim)
            timings.append(elapsed)
            let err = victim.process.stderrText()
            XCTAssertTrue(err.contains("57014") && err.contains("canceling statement due to user request"),
                          "round \(round) (\(workers) workers): psql exited \(victim.process.poll() ?? -99) after " +
                          "\(String(format: "%.2f", elapsed)) s with: \(err)\nlog:\n\(px.log().suffix(3000))",
                          file: file, line: line)
            XCTAssertLessThan(elapsed, 5.0, "round \(round): cancel took \(elapsed) s", file: file, line: line)
            XCTAssertTrue(bystander.process.isRunning, "round \(round): the bystander was hit instead or too: " +
                          bystander.process.stderrText(), file: file, line: line)
        }
        print("cancel with \(workers) workers: \(timings.map { String(format: "%.3f", $0) }.joined(separator: ", ")) s " +
              "from SIGINT to psql's exit; cancel log lines: " +
              "\(px.logLines(containing: "cancel").count)")

        // The bystander's backend ran untouched all along; now it is cancelled the same way.
        XCTAssertTrue(Self.waitUntilRunning(pg, tag: "bystander", timeout: 1), "the bystander's query is gone", file: file, line: line)
        let elapsed = try cancelAndWait(bystander)
        XCTAssertTrue(bystander.process.stderrText().contains("57014"),
                      "bystander: \(bystander.process.stderrText())", file: file, line: line)
        XCTAssertLessThan(elapsed, 5.0, file: file, line: line)

        let after = try Psql.run(target, "select 'still fine'")
        XCTAssertEqual(after.stdout.trimmed, "still fine", "\(after)", file: file, line: line)
        XCTAssertTrue(px.isRunning, file: file, line: line)
    }

    /// Deterministic routing: a raw client logs in (keeping its BackendKeyData) and runs pg_sleep;
    /// CancelRequests are then sent on connections chosen by which worker accepted them (read from
    /// /proc): first one with a wrong key from another worker (must cancel nothing), then the right
    /// key from another worker (forwarded through the supervisor), then, on a second query, from
    /// the owner itself.
    func testCancelRequestRoutedFromAnyWorker() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 3, poolSize: 2))
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let workers = px.workerPids()
        XCTAssertEqual(workers.count, 3, px.log())

        let client = try KeyedClient(port: px.port, user: TxFixtures.role, database: "testdb")
        guard let owner = Self.waitForOwner(of: client.socket, port: px.port, workers: workers) else {
            return XCTFail("cannot tell which worker holds the client connection")
        }

        // Wrong key, from another worker: nothing happens to the query.
        try client.socket.send(WireEncode.query("select pg_sleep(30), 'xw-cancel-1'"))
        XCTAssertTrue(Self.waitUntilRunning(pg, tag: "xw-cancel-1"), "the query never started")
        _ = try Self.sendCancel(port: px.port, workers: workers, from: { $0 != owner },
                           processID: client.processID, secretKey: client.secretKey &+ 1)
        let cancelledByWrongKey = waitUntil(timeout: 1.5) { !Self.waitUntilRunning(pg, tag: "xw-cancel-1", timeout: 0) }
        XCTAssertFalse(cancelledByWrongKey, "a CancelRequest with a wrong secret key stopped the query")

        // Right key, from another worker.
        var started = try Self.sendCancel(port: px.port, workers: workers, from: { $0 != owner },
                                     processID: client.processID, secretKey: client.secretKey)
        var fields = try readAnswer(client, px, "the cross-worker cancel")
        var elapsed = monotonicNow() - started
        XCTAssertEqual(fields?.sqlstate, "57014", "cross-worker cancel: \(fields.map { "\($0)" } ?? "no error")\n" +
                       "log:\n\(px.log().suffix(3000))")
        XCTAssertLessThan(elapsed, 5.0)
        print("cancel forwarded from another worker: \(String(format: "%.3f", elapsed)) s")

        // The connection is usable, and the owner itself routes a cancel too.
        let after = try client.query("select 'after'")
        XCTAssertNil(after, "the query after the cancel failed: \(after.map { "\($0)" } ?? "")")
        try client.socket.send(WireEncode.query("select pg_sleep(30), 'xw-cancel-2'"))
        XCTAssertTrue(Self.waitUntilRunning(pg, tag: "xw-cancel-2"), "the second query never started")
        started = try Self.sendCancel(port: px.port, workers: workers, from: { $0 == owner },
                                 processID: client.processID, secretKey: client.secretKey)
        fields = try readAnswer(client, px, "the same-worker cancel")
        elapsed = monotonicNow() - started
        XCTAssertEqual(fields?.sqlstate, "57014", "same-worker cancel: \(fields.map { "\($0)" } ?? "no error")")
        XCTAssertLessThan(elapsed, 5.0)
        print("cancel on the owning worker: \(String(format: "%.3f", elapsed)) s")
        XCTAssertTrue(px.isRunning)
    }

    /// With every server of the pool busy and another client queued, a cancel still goes through
    /// (it must not need a pool slot itself), and the queued client then gets the freed server.
    func testCancelWhileThePoolIsFull() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1))
        defer {
            px.stop()
            TxFixtures.terminateLeftovers(pg)
        }
        let a = try KeyedClient(port: px.port, user: TxFixtures.role, database: "testdb")
        try a.socket.send(WireEncode.query("select pg_sleep(30), 'full-a'"))
        XCTAssertTrue(Self.waitUntilRunning(pg, tag: "full-a"), "A's query never started")
        let b = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb", timeout: 30)
        defer { b.close() }
        try b.socket.send(WireEncode.query("select 'full-b'"))

        let s = try TestSocket(port: px.port)
        let started = monotonicNow()
        try s.send(WireEncode.int32(16) + WireEncode.int32(80_877_102) + WireEncode.int32(a.processID)
                   + WireEncode.int32(a.secretKey))
        let answer = try readAnswer(a, px, "the cancel with a full pool")
        let elapsed = monotonicNow() - started
        XCTAssertEqual(answer?.sqlstate, "57014", "\(answer.map { "\($0)" } ?? "A's query was not cancelled")")
        XCTAssertLessThan(elapsed, 5.0)

        var bRow: String?
        while let m = try b.readMessage(timeout: 30) {
            if m.typeChar == "D" { bRow = String(decoding: m.body.dropFirst(6), as: UTF8.self) }
            if m.typeChar == "E" { XCTFail("B: \(WireErrorFields(body: m.body))") }
            if m.typeChar == "Z" { break }
        }
        XCTAssertEqual(bRow, "full-b", "the queued client did not get the server after the cancel")
        print("cancel with a full pool: \(String(format: "%.3f", elapsed)) s")
    }

    /// A cancel is for one client's query only. Client A runs short queries and sends a CancelRequest
    /// for each at a random moment, while client B runs its own queries back to back on the same
    /// single server. A cancel still on its way to PostgreSQL when A's query ends must not land on
    /// B's query, which now runs on that backend (PgBouncer holds such a server back until the
    /// cancel has been delivered). B never asks for a cancel, so B must never see 57014.
    func testCancelNeverHitsAnotherClientsQuery() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1))
        defer { px.stop() }

        let tally = Tally()
        let stopAt = monotonicNow() + 8
        let port = px.port
        let bDone = Thread.detachNewThreadWithCompletion {
            do {
                let b = try WireClient.connect(port: port, user: TxFixtures.role, database: "testdb", timeout: 30)
                defer { b.close() }
                while monotonicNow() < stopAt {
                    do {
                        _ = try b.query("select pg_sleep(0.02), 'B'")
                        tally.add("b_ok")
                    } catch let e as WireServerError where e.fields.sqlstate == "57014" {
                        tally.add("b_cancelled")
                    }
                }
            } catch {
                tally.note("B failed: \(error)")
            }
        }

        let a = try KeyedClient(port: px.port, user: TxFixtures.role, database: "testdb")
        while monotonicNow() < stopAt {
            try a.socket.send(WireEncode.query("select pg_sleep(0.01), 'A'"))
            sleepSeconds(Double.random(in: 0...0.03))  // the cancel lands before, during or after A's query
            let s = try TestSocket(port: px.port)
            try s.send(WireEncode.int32(16) + WireEncode.int32(80_877_102) + WireEncode.int32(a.processID)
                       + WireEncode.int32(a.secretKey))
            _ = s.readUntilClosed(timeout: 10)
            tally.add("cancels")
            let answer = try a.readUntilReady(timeout: 30)
            tally.add(answer?.sqlstate == "57014" ? "a_cancelled" : answer == nil ? "a_ok" : "a_other")
        }
        XCTAssertTrue(bDone.wait(timeout: 60), "client B did not finish")
        let counts = tally.snapshot()
        print("cancel isolation: \(counts.counts.sorted { $0.key < $1.key })")
        XCTAssertTrue(counts.notes.isEmpty, "\(counts.notes)")
        XCTAssertEqual(counts.counts["b_cancelled", default: 0], 0,
                       "cancel requests for client A cancelled client B's queries: \(counts.counts)")
        XCTAssertGreaterThan(counts.counts["b_ok", default: 0], 0)
        XCTAssertEqual(counts.counts["a_other", default: 0], 0)
    }

    /// The client's answer after a cancel; a timeout is turned into a failure that shows the log.
    private func readAnswer(_ client: KeyedClient, _ px: Pgswift, _ what: String) throws -> WireErrorFields? {
        do {
            return try client.readUntilReady(timeout: 10)
        } catch {
            XCTFail("\(what) did not end the query: \(error)\nlog:\n\(px.log().suffix(3000))")
            throw error
        }
    }

    /// The worker process holding the accepted end of `socket`'s connection.
    static func waitForOwner(of socket: TestSocket, port: Int, workers: [pid_t]) -> pid_t? {
        var owner: pid_t?
        _ = waitUntil(timeout: 10) {
            guard let inode = Self.acceptedSocketInode(clientPort: socket.localPort, serverPort: port) else { return false }
            owner = workers.first { ProcFS.socketInodes(of: $0).contains(inode) }
            return owner != nil
        }
        return owner
    }

    /// The inode of the accepted end (127.0.0.1:serverPort ← 127.0.0.1:clientPort), by searching
    /// /proc/net/tcp's text for that one line: after pgbench runs the table holds tens of thousands
    /// of TIME_WAIT lines, too many to split and parse on every poll.
    static func acceptedSocketInode(clientPort: Int, serverPort: Int) -> UInt64? {
        let hex = { (p: Int) in String(format: "%04X", p) }
        let needle = "0100007F:\(hex(serverPort)) 0100007F:\(hex(clientPort)) "
        let text = readTextFile("/proc/net/tcp")
        guard let hit = text.range(of: needle) else { return nil }
        let rest = text[hit.upperBound...]
        let line = rest[..<(rest.firstIndex(of: "\n") ?? rest.endIndex)]
        // After the remote address: st tx:rx tr:when retrnsmt uid timeout inode.
        let fields = line.split(separator: " ")
        guard fields.count > 6, let inode = UInt64(fields[6]), inode != 0 else { return nil }
        return inode
    }

    /// Opens connections until one is accepted by a worker satisfying `from`, and sends the
    /// CancelRequest on it (SO_REUSEPORT spreads connections by their source port). Returns when
    /// it was sent; waits for pgswift to close that connection.
    static func sendCancel(port: Int, workers: [pid_t], from: (pid_t) -> Bool, processID: UInt32,
                            secretKey: UInt32) throws -> Double {
        // Probes that landed elsewhere stay open until the end: a worker gives up its place at the
        // head of the shared listener's queue only while it holds more than its share of the clients
        // (Worker.takesTurn), so connections opened and closed one at a time would all land on one.
        var probes: [TestSocket] = []
        defer { probes.forEach { $0.close() } }
        for _ in 0..<100 {
            let s = try TestSocket(port: port)
            probes.append(s)
            guard let w = Self.waitForOwner(of: s, port: port, workers: workers) else { continue }
            guard from(w) else { continue }
            let sent = monotonicNow()
            try s.send(WireEncode.int32(16) + WireEncode.int32(80_877_102) + WireEncode.int32(processID)
                       + WireEncode.int32(secretKey))
            _ = s.readUntilClosed(timeout: 10)
            return sent
        }
        throw E2EError("no connection landed on the wanted worker in 100 tries")
    }

    private struct Sleeper {
        let process: ChildProcess
    }

    /// psql running `select pg_sleep(seconds), '<tag>'` with verbose errors (so the SQLSTATE shows).
    private func startSleeper(_ target: ClientTarget, tag: String, seconds: Int, dir: String) throws -> Sleeper {
        let argv = try Psql.argv(target, ["select pg_sleep(\(seconds)), '\(tag)'"], verbose: true)
        let p = try ChildProcess.spawn(argv, environment: target.environment,
                                       stdoutPath: "\(dir)/\(tag).out", stderrPath: "\(dir)/\(tag).err")
        return Sleeper(process: p)
    }

    /// True once PostgreSQL shows the query tagged `tag` active.
    static func waitUntilRunning(_ pg: PostgresServer, tag: String, timeout: Double = 30) -> Bool {
        waitUntil(timeout: timeout, poll: 0.02) {
            (try? TxFixtures.backends(pg).contains { $0.query.contains("'\(tag)'") && $0.state == "active" }) ?? false
        }
    }

    /// SIGINT to psql (its Ctrl-C handler sends the CancelRequest), then waits for it to exit.
    /// Returns the seconds in between. A psql still waiting after 15 s (the cancel went nowhere) is
    /// killed, so a failing round does not cost the whole pg_sleep; then the result is 15.
    private func cancelAndWait(_ sleeper: Sleeper) throws -> Double {
        let started = monotonicNow()
        sleeper.process.signal(SIGINT)
        guard sleeper.process.wait(timeout: 15) != nil else {
            sleeper.process.terminate(SIGKILL, grace: 0)
            return 15
        }
        return monotonicNow() - started
    }
}

/// A raw protocol client that keeps the BackendKeyData pgswift gave it (trust login only).
final class KeyedClient {
    let socket: TestSocket
    private let wire: WireClient
    private(set) var processID: UInt32 = 0
    private(set) var secretKey: UInt32 = 0

    init(port: Int, user: String, database: String, parameters: [(String, String)] = [],
         timeout: Double = 30) throws {
        socket = try TestSocket(port: port, timeout: timeout)
        wire = WireClient(socket: socket, timeout: timeout)
        try socket.send(WireEncode.startup(parameters: [("user", user), ("database", database)] + parameters))
        while true {
            guard let m = try wire.readMessage() else { throw E2EError("connection closed during login") }
            switch m.typeChar {
            case "K" where m.body.count >= 8:
                processID = m.body[0..<4].reduce(0) { $0 << 8 | UInt32($1) }
                secretKey = m.body[4..<8].reduce(0) { $0 << 8 | UInt32($1) }
            case "E": throw WireServerError(fields: WireErrorFields(body: m.body))
            case "R" where m.body.count >= 4 && m.body[3] != 0:
                throw E2EError("KeyedClient handles trust logins only")
            case "Z": return
            default: continue
            }
        }
    }

    deinit { socket.close() }

    /// Reads up to ReadyForQuery; the ErrorResponse on the way, if any.
    func readUntilReady(timeout: Double) throws -> WireErrorFields? {
        var error: WireErrorFields?
        while true {
            guard let m = try wire.readMessage(timeout: timeout) else { throw E2EError("connection closed") }
            if m.typeChar == "E" { error = WireErrorFields(body: m.body) }
            if m.typeChar == "Z" { return error }
        }
    }

    /// Runs a simple query; its error, or nil when it succeeded.
    func query(_ sql: String, timeout: Double = 30) throws -> WireErrorFields? {
        try socket.send(WireEncode.query(sql))
        return try readUntilReady(timeout: timeout)
    }

    /// The first column of the first row of `sql` (a single-column text query); throws on an error.
    func value(_ sql: String, timeout: Double = 30) throws -> String? {
        try socket.send(WireEncode.query(sql))
        var result: String?
        var error: WireErrorFields?
        while true {
            guard let m = try wire.readMessage(timeout: timeout) else { throw E2EError("connection closed") }
            switch m.typeChar {
            case "D" where result == nil && m.body.count >= 6:
                let len = Int32(bitPattern: m.body[2..<6].reduce(0) { $0 << 8 | UInt32($1) })
                result = len < 0 ? nil : String(decoding: m.body[6..<6 + Int(len)], as: UTF8.self)
            case "E": error = WireErrorFields(body: m.body)
            case "Z":
                if let error { throw WireServerError(fields: error) }
                return result
            default: continue
            }
        }
    }
}

/// Counters and notes shared between a test and its helper threads.
final class Tally: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [String: Int] = [:]
    private var notes: [String] = []

    func add(_ key: String) {
        lock.lock()
        counts[key, default: 0] += 1
        lock.unlock()
    }

    func note(_ text: String) {
        lock.lock()
        notes.append(text)
        lock.unlock()
    }

    func snapshot() -> (counts: [String: Int], notes: [String]) {
        lock.lock()
        defer { lock.unlock() }
        return (counts, notes)
    }
}

/// Completion of a detached thread.
final class ThreadDone: @unchecked Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    func signal() { semaphore.signal() }
    func wait(timeout: Double) -> Bool { semaphore.wait(timeout: .now() + timeout) == .success }
}

extension Thread {
    /// Runs `body` on a new thread; the result tells when it has returned.
    static func detachNewThreadWithCompletion(_ body: @escaping @Sendable () -> Void) -> ThreadDone {
        let done = ThreadDone()
        Thread.detachNewThread {
            body()
            done.signal()
        }
        return done
    }
}
