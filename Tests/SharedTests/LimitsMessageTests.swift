// Tests of the service-limits control messages (kinds 0x30/0x70) and of the shared client counter.
import Foundation
import XCTest
import Shared

final class LimitsMessageTests: XCTestCase {
    static let messages: [ControlMessage] = [
        .limitsToWorker(.groupQuota(LimitGroupKey(kind: .database, name: "app"), quota: 3, seq: 9)),
        .limitsToWorker(.groupQuota(LimitGroupKey(kind: .user, name: "ünï"), quota: 0, seq: UInt32.max)),
        .limitsToWorker(.database(.pause, database: "app", requestID: 7)),
        .limitsToWorker(.database(.countCloseNeeded, database: "", requestID: 0)),
        .limitsToWorker(.killClient(clientID: 42, requestID: 1)),
        .limitsToWorker(.warm(database: "d", user: "u", count: 2)),
        .limitsFromWorker(.groupReport(LimitGroupKey(kind: .user, name: "bob"), servers: 4, idle: 1, waiting: 30, seq: 5)),
        .limitsFromWorker(.reply(requestID: 3, count: -1)),
    ]

    private func decode(_ bytes: [UInt8]) throws -> ControlMessage {
        try bytes.withUnsafeBytes { raw throws -> ControlMessage in try ControlMessage.decode(raw) }
    }

    func testRoundTripsTruncationsAndTrailingBytes() throws {
        for m in Self.messages {
            let bytes = m.encode()
            XCTAssertEqual(try decode(bytes), m)
            for cut in 0..<bytes.count { XCTAssertThrowsError(try decode(Array(bytes[0..<cut])), "\(m) cut at \(cut)") }
            XCTAssertThrowsError(try decode(bytes + [0]))
        }
    }

    func testKindsAreInTheirRangesAndDirectionIsChecked() throws {
        XCTAssertEqual(ControlMessage.limitsToWorker(.killClient(clientID: 1, requestID: 2)).encode().first, 0x30)
        XCTAssertEqual(ControlMessage.limitsFromWorker(.reply(requestID: 1, count: 0)).encode().first, 0x70)
        // A worker-side message under the supervisor-side kind is refused.
        var wrong = ControlMessage.limitsFromWorker(.reply(requestID: 1, count: 0)).encode()
        wrong[0] = 0x30
        XCTAssertThrowsError(try decode(wrong))
        var badOp = ControlMessage.limitsToWorker(.database(.pause, database: "", requestID: 0)).encode()
        badOp[2] = 99
        XCTAssertThrowsError(try decode(badOp))
    }

    func testClientCounterIsExactAndReclaimsADeadWorkersPlaces() throws {
        let sup = try ClientCounter.create()
        let w0 = try ClientCounter.map(sup.fd), w1 = try ClientCounter.map(sup.fd)
        var admitted = 0
        for i in 0..<30 where (i % 2 == 0 ? w0 : w1).tryAcquire(slot: i % 2, limit: 20) { admitted += 1 }
        XCTAssertEqual(admitted, 20)
        XCTAssertEqual(sup.total, 20)
        XCTAssertEqual(sup.held(bySlot: 0) + sup.held(bySlot: 1), 20)
        w0.release(slot: 0)
        XCTAssertTrue(w1.tryAcquire(slot: 1, limit: 20), "a freed place is taken again")
        XCTAssertFalse(w1.tryAcquire(slot: 1, limit: 20))
        // Worker 1 dies: the supervisor gives its places back.
        XCTAssertEqual(sup.reclaim(slot: 1), 11)
        XCTAssertEqual(sup.total, 9)
        XCTAssertEqual(sup.held(bySlot: 1), 0)
    }

    func testAdoptedClientsMoveBetweenAnOldAndANewProcessOfOneSlot() throws {
        // A rolling restart: slot 0's old process uses word 0, its successor word 2 (slot + workers).
        let sup = try ClientCounter.create()
        let old = try ClientCounter.map(sup.fd), new = try ClientCounter.map(sup.fd)
        for _ in 0..<3 { XCTAssertTrue(old.tryAcquire(slot: 0, limit: 3)) }
        old.release(slot: 0)          // handed over...
        new.acquireUnchecked(slot: 2) // ...and adopted
        XCTAssertEqual(sup.total, 3)
        XCTAssertFalse(new.tryAcquire(slot: 2, limit: 3), "the limit still holds across the two processes")
        // The old process exits: only its own remaining clients' places come back.
        XCTAssertEqual(sup.reclaim(slot: 0), 2)
        XCTAssertEqual(sup.total, 1)
        XCTAssertEqual(sup.held(bySlot: 2), 1)
    }

    func testClientCounterNeverOvershootsUnderContention() throws {
        let sup = try ClientCounter.create()
        let limit = 50
        final class PerThread: @unchecked Sendable {
            let held = UnsafeMutablePointer<Int>.allocate(capacity: 4)
            let maxSeen = UnsafeMutablePointer<Int>.allocate(capacity: 4)
            init() { held.initialize(repeating: 0, count: 4); maxSeen.initialize(repeating: 0, count: 4) }
            deinit { held.deallocate(); maxSeen.deallocate() }
        }
        let r = PerThread()
        let fd = sup.fd
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            guard let c = try? ClientCounter.map(fd) else { return }
            var n = 0
            for _ in 0..<10_000 {
                if c.tryAcquire(slot: t, limit: limit) {
                    n += 1
                    r.maxSeen[t] = max(r.maxSeen[t], c.total)
                    if n % 3 == 0 { c.release(slot: t); n -= 1 }
                }
            }
            r.held[t] = n
        }
        let total = (0..<4).reduce(0) { $0 + r.held[$1] }
        XCTAssertLessThanOrEqual((0..<4).map { r.maxSeen[$0] }.max()!, limit)
        XCTAssertEqual(total, sup.total)
        XCTAssertLessThanOrEqual(total, limit)
    }
}
