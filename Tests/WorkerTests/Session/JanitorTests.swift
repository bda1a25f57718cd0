// Timeouts the janitor enforces (Janitor.swift), through a real worker loop.
import XCTest
@testable import Worker
import Shared

final class JanitorTests: WorkerHarnessCase {
    /// server_connect_timeout counts from the start of the connect, as PgBouncer's `connect_time`:
    /// connect and login together ("If connection and login don't finish in this amount of time"), not
    /// each phase on its own. The server here is logging in (its startup packet is never answered) and
    /// its login phase began just now; its connect's start is moved back past the timeout, as a connect
    /// that took that long would have left it. The janitor's next pass closes it, and the pool keeps
    /// the error for server_login_retry; the client keeps waiting (not a refusal).
    func testServerConnectTimeoutCountsFromTheStartOfTheConnect() throws {
        try start(["server_connect_timeout": "30", "server_login_retry": "60"])
        var silent: [FakeServer] = []
        h.onStartup = { silent.append($0) }
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        h.waitUntil("the server's startup packet") { !silent.isEmpty }
        let w = h.worker
        let si = try XCTUnwrap((0..<Int32(w.servers.capacity)).first { w.servers[$0].state == .login })
        let p = Int(w.servers[si].pool)
        XCTAssertLessThan(w.now - w.servers[si].stateSince, 30_000_000_000, "the login phase began just now")
        w.servers[si].createdAt -= 31_000_000_000
        h.waitClosed(silent[0])
        XCTAssertEqual(w.pools[p].loginError?.message, "server_connect_timeout")
        XCTAssertFalse(c.eof, "the waiting client was dropped")
        XCTAssertEqual(h.servers.count, 1, "no new attempt within server_login_retry")
    }
}
