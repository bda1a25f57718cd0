// The transition functions (States.swift) are the only writers of a connection's state, and they keep
// the pool's lists and counters: driven here on a worker with no sockets.
import Foundation
import XCTest
@testable import Worker
import Shared

final class StatesTests: XCTestCase {
    static var repositoryRoot: URL {
        // Tests/WorkerTests/Session/StatesTests.swift -> the package root.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
    }

    /// `x.state = ...` (not `==`) appears in Sources/Worker only inside States.swift.
    func testStateIsAssignedOnlyByTheTransitionFunctions() throws {
        let dir = Self.repositoryRoot.appendingPathComponent("Sources/Worker")
        let walker = try XCTUnwrap(FileManager.default.enumerator(at: dir, includingPropertiesForKeys: nil))
        let assignment = try NSRegularExpression(pattern: #"\]\.state\s*=(?!=)"#)
        var offenders: [String] = []
        var files = 0
        for case let url as URL in walker where url.pathExtension == "swift" {
            files += 1
            let text = try String(contentsOf: url, encoding: .utf8)
            let allowed = url.lastPathComponent == "States.swift"
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let s = String(line)
                if s.trimmingCharacters(in: .whitespaces).hasPrefix("//") { continue }
                if assignment.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil {
                    if allowed { continue }
                    offenders.append("\(url.lastPathComponent):\(n + 1): \(s.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
        XCTAssertGreaterThan(files, 10, "no worker sources found under \(dir.path)")
        XCTAssertEqual(offenders, [], "state written outside setClientState/setServerState")
    }

    private func makeWorker(mode: String = "transaction") throws -> Worker {
        let config = try Config.parse(text: """
            [databases]
            db = host=127.0.0.1 port=1
            [pgbouncer]
            listen_port = 1
            pool_mode = \(mode)
            auth_type = trust
            """, file: "test.ini")
        let options = WorkerOptions(configPath: "test.ini", slot: 0, tcpFDs: [], unixFDs: [], controlFD: -1, verbose: 0)
        return try Worker(options: options, config: config, userlist: Userlist(entries: [:]))
    }

    /// A server record in `pool`, as launchServer makes one, without a socket.
    private func server(_ w: Worker, pool p: Int32) -> Int32 {
        let si = w.servers.allocate()
        w.servers[si].pool = p
        w.setServerState(si, .connecting)
        return si
    }

    private func client(_ w: Worker, pool p: Int32) -> Int32 {
        let ci = w.clients.allocate()
        w.setClientState(ci, .startup)
        w.clients[ci].pool = p
        w.pools[Int(p)].clientCount += 1
        w.setClientState(ci, .idle)
        return ci
    }

    private func counts(_ w: Worker, _ p: Int32) -> [String: Int] {
        let c = w.pools[Int(p)]
        return ["servers": c.serverCount, "connecting": c.connectingCount, "idle": c.idle.count,
                "active": c.activeCount, "waiting": c.waiting.count, "workerActive": w.hot.pointee.activeServerCount]
    }

    func testServerLifeKeepsEveryCounter() throws {
        let w = try makeWorker()
        let p = try XCTUnwrap(w.pool(database: "db", user: "u"))
        let si = server(w, pool: p)
        XCTAssertEqual(counts(w, p), ["servers": 1, "connecting": 1, "idle": 0, "active": 0, "waiting": 0, "workerActive": 0])
        w.setServerState(si, .login)
        XCTAssertEqual(counts(w, p)["connecting"], 1, "connecting -> login is still connecting")
        w.setServerState(si, .idle)
        XCTAssertEqual(counts(w, p), ["servers": 1, "connecting": 0, "idle": 1, "active": 0, "waiting": 0, "workerActive": 0])
        XCTAssertEqual(w.pools[Int(p)].idle.head, si)
        let ci = client(w, pool: p)
        w.link(ci, si)
        XCTAssertEqual(counts(w, p), ["servers": 1, "connecting": 0, "idle": 0, "active": 1, "waiting": 0, "workerActive": 1])
        XCTAssertEqual(w.pools[Int(p)].idle.head, -1, "a linked server left the idle list")
        w.unlink(client: ci, server: si)
        XCTAssertEqual(w.clients[ci].state, .idle)
        XCTAssertEqual(w.servers[si].state, .active, "unlinked, the server waits for its caller to move it on")
        w.setServerState(si, .resetting)
        XCTAssertEqual(counts(w, p), ["servers": 1, "connecting": 0, "idle": 0, "active": 0, "waiting": 0, "workerActive": 0])
        w.setServerState(si, .free)
        XCTAssertEqual(counts(w, p)["servers"], 0)
    }

    /// The double count the old hand-written sites had: a linked server whose client leaves while it
    /// is busy is unlinked and then closed; the active counts drop once, not twice.
    func testUnlinkThenCloseCountsOnce() throws {
        let w = try makeWorker()
        let p = try XCTUnwrap(w.pool(database: "db", user: "u"))
        let a = server(w, pool: p), b = server(w, pool: p)
        w.setServerState(a, .idle)
        w.setServerState(b, .idle)
        let c1 = client(w, pool: p), c2 = client(w, pool: p)
        w.link(c1, a)
        w.link(c2, b)
        XCTAssertEqual(w.hot.pointee.activeServerCount, 2)
        w.unlink(client: c1, server: a)
        w.setServerState(a, .free)
        XCTAssertEqual(counts(w, p), ["servers": 1, "connecting": 0, "idle": 0, "active": 1, "waiting": 0, "workerActive": 1])
    }

    func testWaitQueueIsFIFOAndFollowsTheState() throws {
        let w = try makeWorker()
        let p = try XCTUnwrap(w.pool(database: "db", user: "u"))
        let cs = (0..<3).map { _ in client(w, pool: p) }
        for c in cs { w.setClientState(c, .waitServer) }
        XCTAssertEqual(w.pools[Int(p)].waiting.count, 3)
        XCTAssertEqual(w.pools[Int(p)].waiting.head, cs[0])
        w.setClientState(cs[1], .waitServer)  // the same state again: keeps its place
        XCTAssertEqual(w.clients[cs[0]].links.next, cs[1])
        w.setClientState(cs[0], .closing)
        XCTAssertEqual(w.pools[Int(p)].waiting.head, cs[1])
        XCTAssertEqual(w.pools[Int(p)].waiting.count, 2)
        let si = server(w, pool: p)
        w.setServerState(si, .idle)
        w.link(cs[1], si)
        XCTAssertEqual(w.pools[Int(p)].waiting.head, cs[2], "the linked client left the queue")
        XCTAssertEqual(w.pools[Int(p)].waiting.count, 1)
    }

    func testCancelConnectionIsNotAPoolServer() throws {
        let w = try makeWorker()
        let p = try XCTUnwrap(w.pool(database: "db", user: "u"))
        let si = w.servers.allocate()
        w.servers[si].pool = p
        w.setServerState(si, .cancelRequest)
        XCTAssertEqual(w.pools[Int(p)].serverCount, 0)
        w.setServerState(si, .free)
        XCTAssertEqual(w.pools[Int(p)].serverCount, 0)
    }

    func testStateSinceRestartsOnEveryTransition() throws {
        let w = try makeWorker()
        let p = try XCTUnwrap(w.pool(database: "db", user: "u"))
        let ci = client(w, pool: p)
        w.now = 1_000
        w.setClientState(ci, .waitServer)
        XCTAssertEqual(w.clients[ci].stateSince, 1_000)
        w.now = 2_000
        w.setClientState(ci, .waitServer)
        XCTAssertEqual(w.clients[ci].stateSince, 2_000)
        let si = server(w, pool: p)
        w.now = 3_000
        w.setServerState(si, .login)
        XCTAssertEqual(w.servers[si].stateSince, 3_000)
    }
}
