// This worker's pool quota (Quotas.swift) through a real worker loop: reserve_pool_size's overdue
// clients in the pool report, and a reserve granted by the supervisor opening a server above pool_size.
import XCTest
@testable import Worker
import Shared

final class QuotasTests: WorkerHarnessCase {
    private func poolIndex(_ database: String = "db", _ user: String = "u") -> Int? {
        h.worker.poolIndex[database + "\u{0}" + user].map { Int($0) }
    }

    /// pool_size=1, reserve_pool_size=1, reserve_pool_timeout=0.3: a client waiting behind the only
    /// server counts as overdue (what the pool report tells the supervisor) only once it has waited
    /// 0.3 s; a quota of 2 (the supervisor's grant) opens the reserve server for it; the limit never
    /// goes above pool_size + reserve_pool_size, whatever the quota.
    func testOverdueClientsAndAGrantedReserveServer() throws {
        try start(["reserve_pool_size": "1", "reserve_pool_timeout": "0.3"], databaseOptions: "pool_size=1")
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s0, "begin", status: "T")
        let pi = try XCTUnwrap(poolIndex())
        XCTAssertEqual(h.worker.pools[pi].reserve, 1)
        XCTAssertEqual(h.worker.pools[pi].limit, 1, "before any quota: the even share of the size, no reserve")
        let b = h.login()
        let sent = Clock.monotonicNanos()
        b.send(FE.query("select b"))
        h.waitUntil("b to wait for a server") { h.worker.pools[pi].waiting.count == 1 }
        h.waitUntil("b to be overdue") { h.worker.overdueClients(pi) == 1 }
        XCTAssertGreaterThanOrEqual(Clock.monotonicNanos() - sent, 300_000_000, "overdue before reserve_pool_timeout")
        XCTAssertEqual(h.servers.count, 1, "no server above pool_size without the supervisor's grant")
        // The supervisor grants the reserve: quota 2.
        h.worker.applyQuota(database: "db", user: "u", quota: 2, seq: 1)
        let s1 = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s1, expect: "select b")
        XCTAssertEqual(h.readUntilReady(b).last?.status, "I")
        XCTAssertEqual(h.worker.overdueClients(pi), 0)
        h.worker.applyQuota(database: "db", user: "u", quota: 5, seq: 2)
        XCTAssertEqual(h.worker.pools[pi].limit, 2, "capped at pool_size + reserve_pool_size")
        h.roundTrip(a, s0, "commit")
    }

    /// reserve_pool_timeout = 0 turns the reserve off (PgBouncer: "0 disables"): no client is ever
    /// overdue, and the limit stays at the pool size whatever the quota.
    func testZeroTimeoutDisablesTheReserve() throws {
        try start(["reserve_pool_size": "3", "reserve_pool_timeout": "0"], databaseOptions: "pool_size=1")
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s0, "begin", status: "T")
        let pi = try XCTUnwrap(poolIndex())
        XCTAssertEqual(h.worker.pools[pi].reserve, 0)
        let b = h.login()
        b.send(FE.query("select b"))
        h.waitUntil("b to wait for a server") { h.worker.pools[pi].waiting.count == 1 }
        XCTAssertEqual(h.worker.overdueClients(pi), 0)
        h.worker.applyQuota(database: "db", user: "u", quota: 4, seq: 1)
        XCTAssertEqual(h.worker.pools[pi].limit, 1)
        h.roundTrip(a, s0, "commit")
        h.answerQuery(s0, expect: "select b")
        XCTAssertEqual(h.readUntilReady(b).last?.status, "I")
    }
}
