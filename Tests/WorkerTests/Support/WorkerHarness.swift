// Drives a real `Worker` in-process, one loop turn at a time: clients are socketpairs (or TCP pairs)
// the worker adopts as accepted, servers are connections to a listener the test plays PostgreSQL on.
// Every wait is for a condition with a generous deadline; nothing sleeps.
import XCTest
import Glibc
@testable import Worker
import Shared

final class WorkerHarness {
    let worker: Worker
    private var backendFD: Int32
    let backendPort: Int
    private(set) var servers: [FakeServer] = []
    private(set) var clients: [Peer] = []
    private var tcpListenFD: Int32 = -1
    /// What each scripted server reports at login (the pool's welcome set is the first server's).
    var welcome: [(String, String)] = [
        ("server_version", "16.4"), ("server_encoding", "UTF8"), ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"), ("TimeZone", "UTC"), ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"), ("application_name", ""), ("IntervalStyle", "postgres"),
    ]
    /// How a server answers its startup packet; nil: a trust login with `welcome` (`FakeServer.answerLogin`).
    var onStartup: ((FakeServer) -> Void)? = nil
    /// Deadline for every wait, in seconds: generous, a failing wait costs only this once.
    var timeout: Double = 10

    /// `settings` override the [pgbouncer] defaults below; `databaseOptions` follow host and port on
    /// the `db` line (e.g. "pool_size=1"); `extraDatabases` are whole lines for [databases]; `pgswift`
    /// are more [pgswift] lines.
    init(_ settings: [String: String] = [:], databaseOptions: String = "", extraDatabases: [String] = [],
         users: [String: String] = ["u": "pw", "v": "pw"], pgswift: [String: String] = [:], peerID: Int = 0,
         peers: [String] = []) throws {
        let listener = try Sockets.listenTCP(SocketAddress.numeric(host: "127.0.0.1", port: 0)!, reusePort: false, backlog: 64)
        let port = Sockets.localAddress(listener)?.port ?? 0
        backendFD = listener
        backendPort = port
        var s: [String: String] = [
            "listen_port": "6432", "auth_type": "trust", "pool_mode": "transaction",
            "log_connections": "0", "log_disconnections": "0", "server_login_retry": "1",
        ]
        for (k, v) in settings { s[k] = v }
        let dbs = (["db = host=127.0.0.1 port=\(port) \(databaseOptions)"] + extraDatabases
                   .map { $0.replacingOccurrences(of: "$PORT", with: "\(port)") }).joined(separator: "\n")
        let text = "[databases]\n\(dbs)\n[pgbouncer]\n"
            + s.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)" }.joined(separator: "\n")
            + "\n[pgswift]\nworkers = 1\n"
            + pgswift.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)\n" }.joined()
            + (peers.isEmpty ? "" : "[peers]\n" + peers.map { $0 + "\n" }.joined())
        configText = text
        self.users = users
        self.peerID = peerID
        worker = try WorkerHarness.makeWorker(text, users: users, slot: 0, peerID: peerID)
    }

    let configText: String
    private let users: [String: String]
    /// `--peer-id` of every worker made here.
    private let peerID: Int
    /// Other workers on the same configuration (a rolling restart's successor), turned with `worker`.
    private(set) var otherWorkers: [Worker] = []

    private static func makeWorker(_ text: String, users: [String: String], slot: Int32, peerID: Int = 0) throws -> Worker {
        let config = try Config.parse(text: text, file: "harness.ini")
        var options = WorkerOptions(configPath: "harness.ini", slot: slot, tcpFDs: [], unixFDs: [], controlFD: -1, verbose: 0)
        options.peerID = peerID
        let w = try Worker(options: options, config: config, userlist: Userlist(entries: users))
        // The loop's clock is read once per turn: start it before a client is adopted.
        try w.turn(timeoutMillis: 0)
        return w
    }

    /// Another worker on the same configuration and scripted backend; `step` turns it too.
    func addWorker(slot: Int32) throws -> Worker {
        let w = try WorkerHarness.makeWorker(configText, users: users, slot: slot, peerID: peerID)
        otherWorkers.append(w)
        return w
    }

    /// The scripted PostgreSQL stops listening: new server connections are refused.
    func stopBackend() {
        if backendFD >= 0 { Glibc.close(backendFD); backendFD = -1 }
    }

    /// Closes everything: the worker's clients and servers (an immediate shutdown), then the test's ends.
    func close() {
        removeLog()
        worker.beginShutdown(.immediate)
        for w in otherWorkers { w.beginShutdown(.immediate) }
        for c in clients { c.close() }
        for s in servers { s.close() }
        if backendFD >= 0 { Glibc.close(backendFD); backendFD = -1 }
        if tcpListenFD >= 0 { Glibc.close(tcpListenFD); tcpListenFD = -1 }
        // What a worker process leaves to its exit (its log file, the control and handoff sockets a test
        // gave it): the test process goes on, and a descriptor left open here shifts every later test's
        // numbers (SystemTests needs 64 and 65 free).
        for w in [worker] + otherWorkers {
            _ = w.log.useLogFile(nil)
            for fd in [w.controlFD, w.handoff.outFD, w.handoff.inFD] where fd >= 0 { Glibc.close(fd) }
            w.controlFD = -1
            w.handoff.outFD = -1
            w.handoff.inFD = -1
        }
    }

    // MARK: The loop

    /// One worker turn (waiting at most `waitMillis` for an event), then the test's side: new server
    /// connections accepted, logins answered, every socket written and read.
    func step(waitMillis: Int32 = 2) {
        XCTAssertNoThrow(try worker.turn(timeoutMillis: waitMillis))
        for w in otherWorkers { XCTAssertNoThrow(try w.turn(timeoutMillis: 0)) }
        acceptServers()
        for s in servers {
            s.peer.pump()
            if s.readStartup(), s.cancel == nil {
                if let f = onStartup { f(s) } else { s.answerLogin(welcome: welcome) }
            }
        }
        for c in clients { c.pump() }
    }

    /// Turns the loop until `cond` holds; fails the test (at the caller's line) after `timeout`.
    @discardableResult
    func waitUntil(_ what: @autoclosure () -> String, timeout: Double? = nil,
                   file: StaticString = #filePath, line: UInt = #line, _ cond: () -> Bool) -> Bool {
        let deadline = Clock.monotonicNanos() + Int64((timeout ?? self.timeout) * 1e9)
        while true {
            if cond() { return true }
            if Clock.monotonicNanos() > deadline {
                XCTFail("timed out waiting for \(what())", file: file, line: line)
                return false
            }
            step()
        }
    }

    /// Turns the loop until nothing has happened on the test's side for `turns` turns in a row: for
    /// asserting that something does NOT happen (no message, no connection). Never a sleep: a turn
    /// returns at once when the worker has work.
    func settle(turns: Int = 25) {
        var quiet = 0
        var last = snapshot()
        while quiet < turns {
            step()
            let now = snapshot()
            if now == last { quiet += 1 } else { quiet = 0; last = now }
        }
    }

    private func snapshot() -> [Int] {
        servers.map { $0.peer.received.count + ($0.closed ? 1 << 40 : 0) }
            + clients.map { $0.received.count + ($0.eof ? 1 << 40 : 0) } + [servers.count]
    }

    private func acceptServers() {
        var peer = SocketAddress()
        while backendFD >= 0, let fd = try? Sockets.accept(backendFD, peer: &peer) {
            // No Nagle on the test's side either: a scripted answer sent in pieces must not wait
            // for a delayed ACK.
            try? Sockets.setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            servers.append(FakeServer(peer: Peer(fd: fd), index: servers.count))
        }
    }

    // MARK: Clients

    /// A client connection adopted by the worker as if accepted: a Unix socketpair, or a TCP pair.
    /// `smallBuffers`: the socket holds only a few KiB in flight (SO_SNDBUF/SO_RCVBUF of 4 KiB), so a
    /// client that stops reading blocks the worker's writes after a few messages.
    func connect(tcp: Bool = false, to target: Worker? = nil, smallBuffers: Bool = false,
                 file: StaticString = #filePath, line: UInt = #line) -> Peer {
        var fds: [Int32] = [-1, -1]
        var peerAddress = SocketAddress.unix(path: "harness")!
        if tcp {
            if tcpListenFD < 0 {
                tcpListenFD = try! Sockets.listenTCP(SocketAddress.numeric(host: "127.0.0.1", port: 0)!, reusePort: false, backlog: 16)
            }
            let (cfd, _) = try! Sockets.connect(Sockets.localAddress(tcpListenFD)!)
            var accepted: Int32? = nil
            waitUntil("the loopback connection", file: file, line: line) {
                accepted = try? Sockets.accept(tcpListenFD, peer: &peerAddress)
                return accepted != nil
            }
            try? Sockets.setIntOption(cfd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            fds = [accepted ?? -1, cfd]
        } else {
            let rc = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
            XCTAssertEqual(rc, 0, "socketpair", file: file, line: line)
        }
        if smallBuffers {
            var small: Int32 = 4096
            setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        }
        let client = Peer(fd: fds[1])
        clients.append(client)
        (target ?? worker).adoptAcceptedClient(fds[0], peer: peerAddress)
        return client
    }

    /// A client logged in (trust): everything up to its first ReadyForQuery has been read.
    @discardableResult
    func login(user: String = "u", database: String = "db", _ params: [(String, String)] = [], tcp: Bool = false,
               smallBuffers: Bool = false, file: StaticString = #filePath, line: UInt = #line) -> Peer {
        let c = connect(tcp: tcp, smallBuffers: smallBuffers, file: file, line: line)
        c.send(FE.startup(user: user, database: database, params))
        let msgs = readUntilReady(c, file: file, line: line)
        XCTAssertEqual(msgs.first?.char, "R", "login answer: \(msgs)", file: file, line: line)
        XCTAssertEqual(msgs.last?.status, "I", "login answer: \(msgs)", file: file, line: line)
        return c
    }

    /// Messages until `count` ReadyForQuery have come (or the connection closed, or the deadline).
    @discardableResult
    func readUntilReady(_ c: Peer, count: Int = 1, file: StaticString = #filePath, line: UInt = #line) -> [Msg] {
        var out: [Msg] = []
        var readies = 0
        waitUntil("\(count) ReadyForQuery (so far: \(out))", file: file, line: line) {
            while readies < count, let m = c.reader.next() {
                out.append(m)
                if m.type == UInt8(ascii: "Z") { readies += 1 }
            }
            return readies >= count || c.eof
        }
        // Whatever else arrived with the last one stays in the reader.
        return out
    }

    /// Every message until the worker closes the connection.
    @discardableResult
    func readUntilClosed(_ c: Peer, file: StaticString = #filePath, line: UInt = #line) -> [Msg] {
        var out: [Msg] = []
        waitUntil("the worker to close the client (so far: \(out))", file: file, line: line) {
            while let m = c.reader.next() { out.append(m) }
            return c.eof
        }
        while let m = c.reader.next() { out.append(m) }
        return out
    }

    /// The next `n` messages the client receives.
    @discardableResult
    func read(_ c: Peer, _ n: Int, file: StaticString = #filePath, line: UInt = #line) -> [Msg] {
        var out: [Msg] = []
        waitUntil("\(n) messages (so far: \(out))", file: file, line: line) {
            while out.count < n, let m = c.reader.next() { out.append(m) }
            return out.count >= n || c.eof
        }
        return out
    }

    // MARK: Servers

    /// Scripted servers that completed a login (cancel connections are not counted).
    var loggedInServers: [FakeServer] { servers.filter { $0.loggedIn } }

    /// Waits until `count` servers have logged in; returns the newest.
    @discardableResult
    func waitServers(_ count: Int, file: StaticString = #filePath, line: UInt = #line) -> FakeServer? {
        waitUntil("\(count) server logins (have \(loggedInServers.count))", file: file, line: line) {
            loggedInServers.count >= count
        }
        return loggedInServers.last
    }

    /// The next message pgswift sends this server.
    @discardableResult
    func next(_ s: FakeServer, file: StaticString = #filePath, line: UInt = #line) -> Msg? {
        var m: Msg? = nil
        waitUntil("a message on server \(s.index)", file: file, line: line) {
            m = s.nextMessage()
            return m != nil || s.closed
        }
        return m
    }

    /// The next `n` messages pgswift sends this server.
    @discardableResult
    func next(_ s: FakeServer, _ n: Int, file: StaticString = #filePath, line: UInt = #line) -> [Msg] {
        var out: [Msg] = []
        waitUntil("\(n) messages on server \(s.index) (so far: \(out))", file: file, line: line) {
            while out.count < n, let m = s.nextMessage() { out.append(m) }
            return out.count >= n || s.closed
        }
        return out
    }

    /// The first server (in acceptance order) that has a message waiting, and that message.
    func nextOnAnyServer(file: StaticString = #filePath, line: UInt = #line) -> (FakeServer, Msg)? {
        var hit: (FakeServer, Msg)? = nil
        waitUntil("a message on any server", file: file, line: line) {
            for s in servers where s.cancel == nil {
                if let m = s.nextMessage() { hit = (s, m); return true }
            }
            return false
        }
        return hit
    }

    /// Reads a simple Query on `s` (checking its text if given) and answers it with one row and `status`.
    @discardableResult
    func answerQuery(_ s: FakeServer, expect sql: String? = nil, value: String = "1", status: Character = "I",
                     file: StaticString = #filePath, line: UInt = #line) -> Msg? {
        let m = next(s, file: file, line: line)
        XCTAssertEqual(m?.char, "Q", "server \(s.index) got \(m.map { "\($0)" } ?? "nothing")", file: file, line: line)
        if let sql { XCTAssertEqual(m?.firstString, sql, file: file, line: line) }
        s.send(BE.row(value) + BE.ready(status))
        return m
    }

    /// Sends a query from `c`, lets `s` answer it with one row, and returns what the client got.
    @discardableResult
    func roundTrip(_ c: Peer, _ s: FakeServer, _ sql: String, status: Character = "I",
                   file: StaticString = #filePath, line: UInt = #line) -> [Msg] {
        c.send(FE.query(sql))
        answerQuery(s, expect: sql, status: status, file: file, line: line)
        return readUntilReady(c, file: file, line: line)
    }

    /// Waits until pgswift closed its connection to `s`.
    func waitClosed(_ s: FakeServer, file: StaticString = #filePath, line: UInt = #line) {
        waitUntil("pgswift to close server \(s.index)", file: file, line: line) { s.closed }
    }

    // MARK: The worker's log

    private var logPath: String? = nil

    /// From now on the worker's log lines also go to a file of the test's (`logLines` reads it).
    func captureLog() {
        let path = "/tmp/pgswift-harness-log-\(Posix.getpid())-\(Clock.monotonicNanos()).log"
        XCTAssertTrue(worker.log.openLogFile(path))
        logPath = path
    }

    /// The worker's log lines since `captureLog` that contain every one of `parts`.
    func logLines(containing parts: String...) -> [Substring] {
        guard let logPath, let text = try? String(contentsOfFile: logPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").filter { line in parts.allSatisfy { line.contains($0) } }
    }

    fileprivate func removeLog() {
        guard let path = logPath else { return }
        _ = worker.log.useLogFile(nil)
        unlink(path)
        logPath = nil
    }
}

/// Base class of the harness tests: a fresh harness per test, everything closed after it.
class WorkerHarnessCase: XCTestCase {
    var h: WorkerHarness!

    @discardableResult
    func start(_ settings: [String: String] = [:], databaseOptions: String = "", extraDatabases: [String] = [],
               users: [String: String] = ["u": "pw", "v": "pw"], pgswift: [String: String] = [:],
               peerID: Int = 0, peers: [String] = []) throws -> WorkerHarness {
        h?.close()
        h = try WorkerHarness(settings, databaseOptions: databaseOptions, extraDatabases: extraDatabases, users: users,
                              pgswift: pgswift, peerID: peerID, peers: peers)
        return h
    }

    override func tearDown() {
        h?.close()
        h = nil
        super.tearDown()
    }
}

/// A seeded generator for randomised tests (SplitMix64): the seed is printed, and
/// PGSWIFT_TEST_SEED replays one.
struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64
    let seed: UInt64

    init(_ name: String) {
        let given = Posix.getenv("PGSWIFT_TEST_SEED").flatMap { UInt64($0) }
        seed = given ?? UInt64(truncatingIfNeeded: Clock.monotonicNanos()) ^ 0x9E37_79B9_7F4A_7C15
        state = seed
        print("\(name): seed \(seed) (replay with PGSWIFT_TEST_SEED=\(seed))")
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
