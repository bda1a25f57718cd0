// Server connections moving between two workers (ServerMove.swift) without a supervisor: the donor's
// `moveServer` is read from its control socket and handed to the receiver as the supervisor would.
import XCTest
import Glibc
@testable import Worker
import Shared

final class ServerMoveTests: WorkerHarnessCase {
    private var control: (Int32, Int32) = (-1, -1)
    private var received: [Int32] = []

    override func tearDown() {
        super.tearDown()
        for fd in [control.1] + received where fd >= 0 { Glibc.close(fd) }
    }

    /// Gives the harness's worker a control socket whose other end the test reads (as the supervisor).
    private func attachControl() throws {
        control = try Posix.socketPair()
        try Posix.setNonBlocking(control.0)
        h.worker.controlFD = control.0  // the worker owns it now
    }

    /// The next control message of kind `moveServer`, with its socket (other messages are skipped).
    private func movedServer(file: StaticString = #filePath, line: UInt = #line) -> (target: Int32, state: HandoffServer, fd: Int32)? {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: ControlMessage.maximumSize + 1, alignment: 16)
        defer { buf.deallocate() }
        var result: (Int32, HandoffServer, Int32)? = nil
        h.waitUntil("a moveServer message", file: file, line: line) {
            var fds: [Int32] = []
            guard case .processed(let n)? = try? Posix.receiveWithFDs(control.1, buf, ControlMessage.maximumSize + 1, fds: &fds),
                  n > 0 else { return false }
            received += fds
            guard case .moveServer(let target, let bytes)? = try? ControlMessage.decode(UnsafeRawBufferPointer(start: buf, count: n)) else {
                XCTAssertTrue(fds.isEmpty, "only a moveServer carries a socket", file: file, line: line)
                return false
            }
            XCTAssertEqual(fds.count, 1, "the server's socket travels with its state", file: file, line: line)
            guard let fd = fds.first, let state = try? bytes.withUnsafeBytes({ try HandoffServer.decode($0) }) else { return false }
            received.removeAll { $0 == fd }
            result = (target, state, fd)
            return true
        }
        return result
    }

    /// A client of `w` logged in (trust).
    private func login(to w: Worker) -> Peer {
        let c = h.connect(to: w)
        c.send(FE.startup(user: "u", database: "db", []))
        XCTAssertEqual(h.readUntilReady(c).last?.status, "I")
        return c
    }

    private func chars(_ msgs: [Msg]) -> [Character] { msgs.map { $0.char } }

    func testIdleServerMovesToTheWorkerTheQuotaGoesToAndKeepsItsStatements() throws {
        try start(["default_pool_size": "2"])
        try attachControl()
        let b = try h.addWorker(slot: 1)
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.parse("mine", "select $1::int") + FE.bind("", "mine", ["7"]) + FE.execute() + FE.sync)
        let got = h.next(s, 4)
        let serverName = got.first?.strings.first ?? ""
        s.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["7"]) + BE.complete("SELECT 1") + BE.ready())
        h.readUntilReady(a)

        // The supervisor lowers worker 0's share to 0 for worker 1's clients.
        h.worker.applyQuota(database: "db", user: "u", quota: 0, seq: 1, moveTo: 1)
        let moved = try XCTUnwrap(movedServer())
        XCTAssertEqual(moved.target, 1)
        XCTAssertEqual(moved.state.database, "db")
        XCTAssertEqual(moved.state.user, "u")
        XCTAssertEqual(moved.state.prepared.map { StatementRegistry.serverName($0.serverID) }, [serverName])
        XCTAssertEqual(h.worker.moves.movedOut, 1)
        XCTAssertFalse(s.closed, "the PostgreSQL session stays open")

        b.adoptServer(HandoffServer.encodeForTest(moved.state), fd: moved.fd)
        XCTAssertEqual(b.moves.adopted, 1)
        // A client of worker 1 gets that very connection: no new login, and the statement it holds is
        // used as is (same id in a fresh registry): Bind only, no Parse.
        let c = login(to: b)
        c.send(FE.parse("theirs", "select $1::int") + FE.bind("", "theirs", ["8"]) + FE.execute() + FE.sync)
        let next = h.next(s, 3)
        XCTAssertEqual(chars(next), ["B", "E", "S"], "the moved server keeps its prepared statement")
        XCTAssertEqual(next.first?.strings[1], serverName)
        s.send(BE.bindComplete + BE.dataRow(["8"]) + BE.complete("SELECT 1") + BE.ready())
        XCTAssertEqual(chars(h.readUntilReady(c)), ["1", "2", "D", "C", "Z"])
        XCTAssertEqual(h.servers.count, 1, "no server connection was opened for worker 1")
    }

    func testStatementNamesTheReceiverUsesOtherwiseAreDeallocatedFirst() throws {
        try start(["default_pool_size": "2"])
        try attachControl()
        let b = try h.addWorker(slot: 1)
        // Worker 1 interns another text first: its id 0 means that text, not worker 0's.
        let first = login(to: b)
        let s1 = try XCTUnwrap(h.waitServers(1))
        first.send(FE.parse("x", "select 'other'") + FE.sync)
        XCTAssertEqual(chars(h.next(s1, 2)), ["P", "S"])
        s1.send(BE.parseComplete + BE.ready())
        h.readUntilReady(first)

        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(2))
        a.send(FE.parse("mine", "select $1::int") + FE.bind("", "mine", ["7"]) + FE.execute() + FE.sync)
        let serverName = h.next(s, 4).first?.strings.first ?? ""
        XCTAssertEqual(serverName, StatementRegistry.serverName(0))
        s.send(BE.parseComplete + BE.bindComplete + BE.dataRow(["7"]) + BE.complete("SELECT 1") + BE.ready())
        h.readUntilReady(a)

        h.worker.applyQuota(database: "db", user: "u", quota: 0, seq: 1, moveTo: 1)
        let moved = try XCTUnwrap(movedServer())
        b.adoptServer(HandoffServer.encodeForTest(moved.state), fd: moved.fd)
        let dealloc = h.next(s)
        XCTAssertEqual(dealloc?.char, "Q")
        XCTAssertEqual(dealloc?.firstString, "DEALLOCATE \(serverName)", "a name that means another text here is dropped")
        s.send(BE.complete("DEALLOCATE") + BE.ready())
        // Both servers serve worker 1's clients now; the deallocated one is clean.
        h.settle()
        XCTAssertFalse(s.closed)
        XCTAssertEqual(h.servers.count, 2, "no server connection was opened")
    }

    func testAServerBusyWhenTheQuotaDropsMovesOnceReleased() throws {
        try start(["default_pool_size": "2"])
        try attachControl()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "begin", status: "T")  // a holds s inside a transaction
        h.worker.applyQuota(database: "db", user: "u", quota: 0, seq: 1, moveTo: 1)
        h.settle()
        XCTAssertEqual(h.worker.moves.movedOut, 0, "a server inside a transaction stays with its client")
        h.roundTrip(a, s, "commit")
        // Released above the quota: it goes where the quota went instead of closing.
        let moved = try XCTUnwrap(movedServer())
        Glibc.close(moved.fd)  // no receiver here: the supervisor's copy of the socket
        XCTAssertEqual(moved.target, 1)
        XCTAssertEqual(h.worker.moves.movedOut, 1)
        XCTAssertFalse(s.closed)
        // A quota that moves nothing (a plain lowering) retires as before.
        h.worker.applyQuota(database: "db", user: "u", quota: 1, seq: 2)
        let b = h.login()
        b.send(FE.query("begin"))
        let s2 = try XCTUnwrap(h.waitServers(2))
        _ = h.answerQuery(s2, expect: "begin", status: "T")
        h.readUntilReady(b)
        h.worker.applyQuota(database: "db", user: "u", quota: 0, seq: 3)
        h.roundTrip(b, s2, "commit")
        h.waitClosed(s2)
        XCTAssertEqual(h.worker.moves.movedOut, 1)
    }

    func testAMalformedStateClosesTheSocketAndNothingElse() throws {
        try start()
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
        defer { Glibc.close(fds[1]) }
        h.worker.adoptServer([1, 2, 3], fd: fds[0])
        XCTAssertEqual(h.worker.moves.adopted, 0)
        var byte: UInt8 = 0
        XCTAssertEqual(Glibc.read(fds[1], &byte, 1), 0, "the socket was closed")
    }
}

extension HandoffServer {
    /// The bytes a supervisor relays (what `moveServer` carried).
    static func encodeForTest(_ s: HandoffServer) -> [UInt8] { s.encode() }
}
