// The /metrics connection caps and timers (MetricsConnectionLimits), without sockets.
import XCTest
@testable import Supervisor

final class MetricsConnectionLimitsTests: XCTestCase {
    private func limits(total: Int = 4, perAddress: Int = 2) -> MetricsConnectionLimits {
        var l = MetricsConnectionLimits()
        l.total = total
        l.perAddress = perAddress
        l.idleNanos = 5
        l.lifetimeNanos = 10
        return l
    }

    func testPerAddressCapEvictsThatAddressesOldestIdle() {
        var l = limits(total: 10, perAddress: 2)
        XCTAssertEqual(l.admit(1, address: "a", now: 0), .accept(evict: []))
        XCTAssertEqual(l.admit(2, address: "b", now: 0), .accept(evict: []))
        XCTAssertEqual(l.admit(3, address: "a", now: 0), .accept(evict: []))
        // The third from "a": its oldest idle one goes, "b" is untouched.
        XCTAssertEqual(l.admit(4, address: "a", now: 0), .accept(evict: [1]))
        XCTAssertEqual(Set(l.entries.keys), [2, 3, 4])
        // A busy connection (answer being written) is never evicted: the idle one goes instead.
        l.requestComplete(3)
        XCTAssertEqual(l.admit(5, address: "a", now: 0), .accept(evict: [4]))
        // Both of "a"'s are busy: the newcomer is refused.
        l.requestComplete(5)
        XCTAssertEqual(l.admit(6, address: "a", now: 0), .refuse)
        XCTAssertEqual(Set(l.entries.keys), [2, 3, 5])
    }

    func testGlobalCapEvictsOldestIdleSoAFreshScrapeIsTaken() {
        var l = limits(total: 4, perAddress: 4)
        for fd in Int32(1)...4 { XCTAssertEqual(l.admit(fd, address: "x\(fd)", now: 0), .accept(evict: [])) }
        l.requestComplete(1)
        // Full: the oldest idle (2, not the busy 1) makes room for the scraper.
        XCTAssertEqual(l.admit(5, address: "scraper", now: 1), .accept(evict: [2]))
        XCTAssertEqual(l.count, 4)
        for fd in Int32(3)...5 { l.requestComplete(fd) }
        XCTAssertEqual(l.admit(6, address: "y", now: 1), .refuse)
        XCTAssertEqual(l.count, 4)
        l.closed(1)
        XCTAssertEqual(l.admit(6, address: "y", now: 1), .accept(evict: []))
    }

    /// A candidate whose request turns out complete (unread until now) is kept and the next one goes.
    func testCandidateWithACompleteRequestIsNotEvicted() {
        var l = limits(total: 10, perAddress: 3)
        for fd in Int32(1)...3 { _ = l.admit(fd, address: "a", now: 0) }
        var asked: [Int32] = []
        XCTAssertEqual(l.admit(4, address: "a", now: 0) { asked.append($0); return $0 == 1 }, .accept(evict: [2]))
        XCTAssertEqual(asked, [1, 2])
        XCTAssertEqual(l.entries[1]?.idle, false)
        // Every candidate answerable: nothing to evict, the newcomer is refused.
        var l2 = limits(total: 10, perAddress: 2)
        for fd in Int32(1)...2 { _ = l2.admit(fd, address: "a", now: 0) }
        XCTAssertEqual(l2.admit(3, address: "a", now: 0) { _ in true }, .refuse)
        XCTAssertEqual(l2.count, 2)
    }

    func testIdleAndLifetimeExpiry() {
        var l = limits(total: 10, perAddress: 10)
        _ = l.admit(1, address: "a", now: 0)   // stays idle
        _ = l.admit(2, address: "a", now: 0)   // completes its request, slow reader
        _ = l.admit(3, address: "a", now: 3)
        l.requestComplete(2)
        XCTAssertEqual(l.nextExpiry, 5)
        XCTAssertEqual(l.expired(now: 4), [])
        XCTAssertEqual(l.expired(now: 5), [1])
        l.closed(1)
        XCTAssertEqual(l.nextExpiry, 8)
        XCTAssertEqual(l.expired(now: 8), [3])
        l.closed(3)
        XCTAssertEqual(l.expired(now: 9), [])
        XCTAssertEqual(l.expired(now: 10), [2])
        l.closed(2)
        XCTAssertNil(l.nextExpiry)
    }

    /// Many addresses and a flood from one: the invariants hold after every step.
    func testCapsHoldUnderRandomTraffic() {
        let initialSeed = UInt64(UInt32.random(in: 1...UInt32.max))
        print("MetricsConnectionLimitsTests seed \(initialSeed)")
        var seed = initialSeed
        func next() -> UInt64 { seed = seed &* 6364136223846793005 &+ 1442695040888963407; return seed >> 33 }
        var l = limits(total: 16, perAddress: 3)
        var fd: Int32 = 0
        for step in 0..<5000 {
            let now = Int64(step / 10)
            switch next() % 4 {
            case 0, 1:
                fd += 1
                let address = next() % 3 == 0 ? "flood" : "h\(next() % 20)"
                switch l.admit(fd, address: address, now: now) {
                case .accept(let evict):
                    XCTAssertNotNil(l.entries[fd])
                    for e in evict { XCTAssertNil(l.entries[e]) }
                case .refuse:
                    XCTAssertNil(l.entries[fd])
                }
            case 2:
                let keys = l.entries.keys.sorted()
                if !keys.isEmpty { l.requestComplete(keys[Int(next() % UInt64(keys.count))]) }
            default:
                for e in l.expired(now: now) { l.closed(e) }
            }
            XCTAssertLessThanOrEqual(l.count, 16)
            var perAddress: [String: Int] = [:]
            for e in l.entries.values { perAddress[e.address, default: 0] += 1 }
            XCTAssertLessThanOrEqual(perAddress.values.max() ?? 0, 3, "seed \(initialSeed), step \(step)")
        }
    }

    func testHostOfPeer() {
        XCTAssertEqual(MetricsConnectionLimits.host(of: "127.0.0.1:5432"), "127.0.0.1")
        XCTAssertEqual(MetricsConnectionLimits.host(of: "[::1]:80"), "[::1]")
    }
}
