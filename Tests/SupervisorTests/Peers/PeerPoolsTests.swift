// Tests of the peer pools: pool_size cancels in flight per peer, FIFO waiting, reload, SHOW PEER_POOLS rows.
import XCTest
import Shared
@testable import Supervisor

final class PeerPoolsTests: XCTestCase {
    private func c(_ n: Int32) -> PeerCancel { PeerCancel(processID: n, secretKey: UInt32(n)) }

    func testPoolSizeBoundsWhatIsInFlightAndTheRestWaitsInOrder() {
        var pools = PeerPools()
        XCTAssertTrue(pools.rows.isEmpty, "a peer pool exists only once a cancel was forwarded to it")
        XCTAssertEqual(pools.request(peer: 2, c(1), poolSize: 2, maxWaiting: 10), .start(c(1)))
        XCTAssertEqual(pools.request(peer: 2, c(2), poolSize: 2, maxWaiting: 10), .start(c(2)))
        XCTAssertEqual(pools.request(peer: 2, c(3), poolSize: 2, maxWaiting: 10), .queued)
        XCTAssertEqual(pools.request(peer: 2, c(4), poolSize: 2, maxWaiting: 10), .queued)
        XCTAssertEqual(pools.request(peer: 5, c(9), poolSize: 2, maxWaiting: 10), .start(c(9)), "per peer")
        pools.sent(peer: 2)
        // peer_id, cl_active_cancel_req, cl_waiting_cancel_req, sv_active_cancel, sv_login
        XCTAssertEqual(pools.rows, [[2, 2, 2, 1, 1], [5, 1, 0, 0, 1]])
        let (start, dropped) = pools.finished(peer: 2, wasSent: true, poolSize: 2)
        XCTAssertEqual(start, [c(3)])
        XCTAssertEqual(dropped, 0)
        XCTAssertEqual(pools.rows[0], [2, 2, 1, 0, 2])
        XCTAssertEqual(pools.finished(peer: 2, wasSent: false, poolSize: 2).start, [c(4)], "a failed connect frees its place too")
        XCTAssertEqual(pools.rows[0], [2, 2, 0, 0, 2])
    }

    func testFullQueueDrops() {
        var pools = PeerPools()
        XCTAssertEqual(pools.request(peer: 1, c(1), poolSize: 1, maxWaiting: 1), .start(c(1)))
        XCTAssertEqual(pools.request(peer: 1, c(2), poolSize: 1, maxWaiting: 1), .queued)
        XCTAssertEqual(pools.request(peer: 1, c(3), poolSize: 1, maxWaiting: 1), .dropped)
    }

    func testReloadStartsWaitingCancelsOrDropsThoseOfRemovedPeers() {
        var pools = PeerPools()
        _ = pools.request(peer: 1, c(1), poolSize: 1, maxWaiting: 9)
        _ = pools.request(peer: 1, c(2), poolSize: 1, maxWaiting: 9)
        _ = pools.request(peer: 2, c(3), poolSize: 1, maxWaiting: 9)
        _ = pools.request(peer: 2, c(4), poolSize: 1, maxWaiting: 9)
        let (start, dropped) = pools.reconfigure { $0 == 1 ? 2 : nil }
        XCTAssertEqual(start.map { $0.peer }, [1])
        XCTAssertEqual(start.map { $0.cancel }, [c(2)])
        XCTAssertEqual(dropped, 1, "peer 2 left [peers]: its waiting cancel goes")
        XCTAssertEqual(pools.rows, [[1, 2, 0, 0, 2], [2, 1, 0, 0, 1]])
        _ = pools.finished(peer: 2, wasSent: false, poolSize: nil)
        XCTAssertEqual(pools.reconfigure { $0 == 1 ? 2 : nil }.dropped, 0)
        XCTAssertEqual(pools.rows.map { $0[0] }, [1], "forgotten once nothing is in flight")
    }
}
