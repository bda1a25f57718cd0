// A client moving to the successor together with its server (PairHandoff.swift), without a supervisor:
// the draining worker and its successor are both in the harness, joined by a handoff socket pair, and
// the scripted PostgreSQL sees whether its session goes on untouched.
import XCTest
import Glibc
@testable import Worker
import Shared

final class PairHandoffTests: WorkerHarnessCase {
    private var fds: [Int32] = []

    override func tearDown() {
        super.tearDown()
        for fd in fds where fd >= 0 { Glibc.close(fd) }
    }

    /// A successor registered on a fresh handoff socket, and the harness's worker draining into it
    /// (told the successor adopts pairs unless `features` says otherwise).
    private func drainIntoSuccessor(features: UInt32 = WorkerFeatures.all) throws -> Worker {
        let successor = try h.addWorker(slot: 0)
        let (out, into) = try Posix.socketPair()
        try successor.registerHandoffInput(into)
        h.worker.beginDrain(handoffFD: out, successorFeatures: features)
        return successor
    }

    private func loginWithKey(_ params: [(String, String)] = []) -> (Peer, pid: Int32, key: UInt32) {
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db", params))
        let k = h.readUntilReady(c).first { $0.char == "K" }?.body ?? [UInt8](repeating: 0, count: 8)
        return (c, TestWire.readInt32(k, 0), UInt32(bitPattern: TestWire.readInt32(k, 4)))
    }

    private func login(to w: Worker) -> Peer {
        let c = h.connect(to: w)
        c.send(FE.startup(user: "u", database: "db", []))
        XCTAssertEqual(h.readUntilReady(c).last?.status, "I")
        return c
    }

    private func pool(_ w: Worker) -> Pool? {
        w.poolIndex["db\u{0}u"].map { w.pools[Int($0)] }
    }

    private func chars(_ msgs: [Msg]) -> [Character] { msgs.map { $0.char } }

    /// Non-blocking stream sockets, as accepted connections are (the test's `Peer` never blocks).
    private static let stream = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue)

    func testQuietSessionClientMovesWithItsServer() throws {
        try start(["pool_mode": "session"])
        let (a, pid, key) = loginWithKey([("application_name", "moving")])
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("create temp table t (i int)"))
        XCTAssertEqual(h.next(s, 2).map { $0.firstString }, ["SET application_name='moving';", "create temp table t (i int)"])
        s.send(BE.complete("SET") + BE.ready() + BE.complete("CREATE TABLE") + BE.ready())
        h.readUntilReady(a)

        let b = try drainIntoSuccessor()
        h.waitUntil("the pair adopted by the successor") { b.handoff.adoptedPairs == 1 }
        XCTAssertEqual(h.worker.handoff.movedPairs, 1)
        XCTAssertEqual(h.worker.clients.used, 0)
        XCTAssertEqual(pool(h.worker)?.serverCount, 0, "the old worker no longer counts the server")
        XCTAssertFalse(s.closed, "the PostgreSQL session stays open")
        // Exactly one client and one active server, linked, in the successor's pool.
        XCTAssertEqual(pool(b)?.clientCount, 1)
        XCTAssertEqual(pool(b)?.serverCount, 1)
        XCTAssertEqual(pool(b)?.activeCount, 1)
        XCTAssertEqual(b.hot.pointee.activeServerCount, 1)
        // The same session answers the next query, with nothing sent before it: no SET, no reset, no login.
        h.roundTrip(a, s, "select * from t")
        XCTAssertEqual(h.servers.count, 1, "no new server connection")
        // The client's key still cancels its query, now through the successor, on the same backend.
        a.send(FE.query("select pg_sleep(100)"))
        _ = h.next(s)
        h.connect(to: b).send(FE.cancel(pid: pid, key: key))
        h.waitUntil("a cancel connection") { h.servers.contains { $0.cancel != nil } }
        XCTAssertEqual(h.servers.first { $0.cancel != nil }?.cancel?.pid, s.backendPID)
    }

    func testSessionClientInTheMiddleOfAQueryMovesAtItsReadyForQuery() throws {
        try start(["pool_mode": "session"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        a.send(FE.query("select pg_sleep(1)"))
        _ = h.next(s)
        let b = try drainIntoSuccessor()
        h.settle()
        XCTAssertEqual(h.worker.handoff.movedPairs, 0, "a pair with a query running stays")
        // A row first: still not done.
        s.send(BE.rowDescription(["v"]) + BE.dataRow(["1"]))
        h.settle()
        XCTAssertEqual(h.worker.handoff.movedPairs, 0)
        s.send(BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["T", "D", "C", "Z"])
        h.waitUntil("the pair moved at its ReadyForQuery") { b.handoff.adoptedPairs == 1 }
        h.roundTrip(a, s, "select 2")
        XCTAssertEqual(h.servers.count, 1)
    }

    func testTransactionModeClientMovesInsideItsTransactionAfterItsCopy() throws {
        try start()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "begin", status: "T")
        a.send(FE.query("copy t from stdin"))
        XCTAssertEqual(h.next(s)?.firstString, "copy t from stdin")
        s.send(TestWire.message("G", [0, 0, 0]))  // CopyInResponse: text, no columns
        XCTAssertEqual(h.read(a, 1).first?.char, "G")
        let b = try drainIntoSuccessor()
        h.settle()
        XCTAssertEqual(h.worker.handoff.movedPairs, 0, "a COPY in progress stays")
        a.send(TestWire.message("d", Array("1\n".utf8)) + TestWire.message("c", []))
        XCTAssertEqual(chars(h.next(s, 2)), ["d", "c"])
        s.send(BE.complete("COPY 1") + BE.ready("T"))
        XCTAssertEqual(h.readUntilReady(a).last?.status, "T")
        h.waitUntil("the pair moved inside its transaction") { b.handoff.adoptedPairs == 1 }
        XCTAssertEqual(h.worker.handoff.moved, 1)
        // The transaction goes on on the same server, then the server goes back to the successor's pool.
        h.roundTrip(a, s, "insert into t values (2)", status: "T")
        h.roundTrip(a, s, "commit")
        h.waitUntil("the server idle in the successor's pool") { pool(b)?.idle.count == 1 }
        XCTAssertEqual(pool(b)?.serverCount, 1)
        XCTAssertEqual(b.hot.pointee.activeServerCount, 0)
        XCTAssertEqual(h.servers.count, 1)
    }

    func testWithoutTheSuccessorsFeatureAPairStays() throws {
        try start(["pool_mode": "session"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        let b = try drainIntoSuccessor(features: WorkerFeatures.serverMoves)
        h.settle()
        XCTAssertEqual(b.handoff.adoptedCount, 0, "an older successor gets nothing it cannot read")
        h.roundTrip(a, s, "select 2")  // still served by the draining worker
        XCTAssertEqual(h.worker.clients.used, 1)
    }

    func testSessionClientWithoutAServerMovesAlone() throws {
        try start(["pool_mode": "session"])
        let a = h.login()  // the pool's first login (for its welcome) stays idle here: the drain closes it
        let b = try drainIntoSuccessor(features: 0)
        h.waitUntil("the client adopted") { b.handoff.adoptedCount == 1 }
        XCTAssertEqual(b.handoff.adoptedPairs, 0)
        a.send(FE.query("select 1"))
        let s = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s, expect: "select 1")
        XCTAssertEqual(h.readUntilReady(a).last?.status, "I")
    }

    /// In an aborted transaction the successor cannot DEALLOCATE a statement name that means another
    /// statement in its registry; it closes it with the protocol's Close instead, and the client's
    /// statement is prepared again under the successor's name when next used.
    func testStatementsTheSuccessorNumbersOtherwiseAreClosedEvenInAnAbortedTransaction() throws {
        try start(["default_pool_size": "2"])
        let b = try h.addWorker(slot: 0)
        // The successor interns another text first: its id 0 means that text.
        let first = login(to: b)
        let s1 = try XCTUnwrap(h.waitServers(1))
        first.send(FE.parse("x", "select 'other'") + FE.sync)
        XCTAssertEqual(chars(h.next(s1, 2)), ["P", "S"])
        s1.send(BE.parseComplete + BE.ready())
        h.readUntilReady(first)

        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(2))
        h.roundTrip(a, s, "begin", status: "T")
        a.send(FE.parse("mine", "select $1::int") + FE.bind("", "mine", ["7"]) + FE.execute() + FE.sync)
        let serverName = h.next(s, 4).first?.strings.first ?? ""
        XCTAssertEqual(serverName, StatementRegistry.serverName(0))
        s.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["7"]) + BE.complete("SELECT 1") + BE.ready("T"))
        h.readUntilReady(a)
        a.send(FE.query("select 1/0"))
        _ = h.next(s)
        s.send(BE.error("22012", "division by zero") + BE.ready("E"))
        XCTAssertEqual(h.readUntilReady(a).last?.status, "E")

        let (out, into) = try Posix.socketPair()
        try b.registerHandoffInput(into)
        h.worker.beginDrain(handoffFD: out, successorFeatures: WorkerFeatures.all)
        let close = h.next(s, 2)
        XCTAssertEqual(chars(close), ["C", "S"], "Close and Sync before anything of the client's")
        XCTAssertEqual(close.first?.body, [UInt8(ascii: "S")] + Array(serverName.utf8) + [0])
        s.send(BE.closeComplete + BE.ready("E"))
        // Swallowed: the client gets only its own answers.
        let rollback = h.roundTrip(a, s, "rollback")
        XCTAssertEqual(chars(rollback), ["T", "D", "C", "Z"])
        XCTAssertEqual(b.handoff.adoptedPairs, 1)
        // Next use of the statement: prepared again on the server under the successor's id.
        a.send(FE.bind("", "mine", ["8"]) + FE.execute() + FE.sync)
        let (server, parse) = try XCTUnwrap(h.nextOnAnyServer())
        XCTAssertEqual(parse.char, "P")
        XCTAssertEqual(parse.strings.first, StatementRegistry.serverName(1))
        XCTAssertEqual(chars(h.next(server, 3)), ["B", "E", "S"])
        server.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["8"]) + BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(a)), ["2", "D", "C", "Z"])
    }

    /// Bad pair datagrams on the handoff socket: the client gets a FATAL error and both sockets close
    /// (PostgreSQL gets a Terminate); nothing is left open in the worker.
    func testAPairThatCannotBeAdoptedClosesBothSocketsWithAnError() throws {
        try start()
        let (out, into) = try Posix.socketPair()
        fds.append(out)
        try h.worker.registerHandoffInput(into)
        let valid = HandoffPair(client: HandoffClient(user: "u", database: "db", processID: 1, secretKey: 2),
                                server: HandoffServer(database: "db", user: "u"), poolMode: "transaction",
                                txStatus: UInt8(ascii: "T"))
        var wrongMode = valid
        wrongMode.poolMode = "session"
        var unknownPool = valid
        unknownPool.server.database = "nowhere"
        unknownPool.client.database = "nowhere"
        let cases: [(String, [UInt8])] = [
            ("garbage", Array("PGP1".utf8) + [1, 2, 3]),
            ("truncated", Array(valid.encode().dropLast())),
            ("another pool mode", wrongMode.encode()),
            ("an unknown pool", unknownPool.encode()),
        ]
        for (what, bytes) in cases {
            var client: [Int32] = [-1, -1], server: [Int32] = [-1, -1]
            XCTAssertEqual(socketpair(AF_UNIX, Self.stream, 0, &client), 0)
            XCTAssertEqual(socketpair(AF_UNIX, Self.stream, 0, &server), 0)
            let sent = try bytes.withUnsafeBytes { try Posix.sendWithFDs(out, $0, fds: [client[0], server[0]]) }
            XCTAssertEqual(sent, .processed(bytes.count), what)
            Glibc.close(client[0])
            Glibc.close(server[0])
            let c = Peer(fd: client[1]), s = Peer(fd: server[1])
            h.waitUntil("\(what): both sockets closed by the worker") {
                c.pump()
                s.pump()
                return c.eof && s.eof
            }
            let error = c.reader.next()
            XCTAssertEqual(error?.char, "E", what)
            XCTAssertEqual(error?.error?.severity, "FATAL", what)
            XCTAssertEqual(s.reader.next()?.char, "X", "\(what): PostgreSQL is told the session ends")
            c.close()
            s.close()
        }
        // One socket where two belong: closed.
        var lone: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Self.stream, 0, &lone), 0)
        let bytes = valid.encode()
        _ = try bytes.withUnsafeBytes { try Posix.sendWithFDs(out, $0, fds: [lone[0]]) }
        Glibc.close(lone[0])
        let l = Peer(fd: lone[1])
        h.waitUntil("the lone socket closed") { l.pump(); return l.eof }
        l.close()
        XCTAssertEqual(h.worker.clients.used, 0)
        XCTAssertEqual(h.worker.servers.used, 0)
        XCTAssertEqual(h.worker.handoff.adoptedPairs, 0)
    }

    func testASendThatFailsLeavesThePairWhereItWas() throws {
        try start(["pool_mode": "session"])
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        let (out, gone) = try Posix.socketPair()
        Glibc.close(gone)  // the successor died
        h.worker.beginDrain(handoffFD: out, successorFeatures: WorkerFeatures.all)
        h.settle()
        XCTAssertEqual(h.worker.handoff.outFD, -1, "the handoff socket is given up")
        XCTAssertEqual(h.worker.handoff.movedPairs, 0)
        h.roundTrip(a, s, "select 2")  // still linked, still served here
        XCTAssertFalse(s.closed)
        XCTAssertEqual(pool(h.worker)?.activeCount, 1)
    }
}
