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
        defer { Posix.close(sup.fd) }
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

    /// SHOW CLIENTS/SERVERS ids: one sequence for every process of the service, as PgBouncer's one
    /// counter per process, kept in the file (so across a supervisor re-exec too).
    func testConnectionIDsAreOneSequenceAcrossProcesses() throws {
        let sup = try ClientCounter.create()
        defer { Posix.close(sup.fd) }
        let w0 = try ClientCounter.map(sup.fd), w1 = try ClientCounter.map(sup.fd)
        XCTAssertEqual([w0.nextConnectionID(), w1.nextConnectionID(), w1.nextConnectionID(), w0.nextConnectionID()],
                       [1, 2, 3, 4])
        let remapped = try ClientCounter.map(sup.fd)
        XCTAssertEqual(remapped.nextConnectionID(), 5)
        XCTAssertEqual(sup.total, 0, "ids are not client places")
        final class Seen: @unchecked Sendable {
            let ids = UnsafeMutablePointer<UInt64>.allocate(capacity: 4000)
            deinit { ids.deallocate() }
        }
        let seen = Seen()
        let fd = sup.fd
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            guard let c = try? ClientCounter.map(fd) else { return }
            for i in 0..<1000 { seen.ids[t * 1000 + i] = c.nextConnectionID() }
        }
        XCTAssertEqual(Set(UnsafeBufferPointer(start: seen.ids, count: 4000)), Set(6...4005), "no id twice, none skipped")
    }

    func testAdoptedClientsMoveBetweenAnOldAndANewProcessOfOneSlot() throws {
        // A rolling restart: slot 0's old process uses word 0, its successor word 2 (slot + workers).
        let sup = try ClientCounter.create()
        defer { Posix.close(sup.fd) }
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
        defer { Posix.close(sup.fd) }
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

    // MARK: The name table (max_db_client_connections, max_user_client_connections)

    func testNameCountsAreExactPerNameAcrossProcessesAndReclaimed() throws {
        let sup = try ClientCounter.create()
        defer { Posix.close(sup.fd) }
        let w0 = try ClientCounter.map(sup.fd), w1 = try ClientCounter.map(sup.fd)
        let app = ClientCounter.nameKey(kind: "d", "app"), alice = ClientCounter.nameKey(kind: "u", "app")
        XCTAssertNotEqual(app, alice, "a database and a user of the same name are different names")
        XCTAssertEqual(ClientCounter.nameKey(kind: "d", "app"), app, "the same key in every process")
        XCTAssertNil(sup.nameEntry(app, claim: false), "not there before a worker counts it")
        let e0 = try XCTUnwrap(w0.nameEntry(app, claim: true))
        let e1 = try XCTUnwrap(w1.nameEntry(app, claim: true))
        XCTAssertEqual(e0, e1, "both processes find the same entry")
        XCTAssertTrue(w0.tryAcquire(entry: e0, slot: 0, limit: 2))
        XCTAssertTrue(w1.tryAcquire(entry: e1, slot: 1, limit: 2))
        XCTAssertFalse(w0.tryAcquire(entry: e0, slot: 0, limit: 2), "the limit is for both workers together")
        XCTAssertEqual(sup.count(entry: e0), 2)
        let u = try XCTUnwrap(w0.nameEntry(alice, claim: true))
        XCTAssertNotEqual(u, e0)
        XCTAssertTrue(w0.tryAcquire(entry: u, slot: 0, limit: 1), "another name has its own count")
        XCTAssertTrue(w0.tryAcquire(entry: u, slot: 0, limit: 0), "limit 0: counted, never refused")
        w1.release(entry: e1, slot: 1)
        XCTAssertTrue(w0.tryAcquire(entry: e0, slot: 0, limit: 2), "a freed place is taken again")
        // Worker 0 dies holding two places of app and two of alice: the supervisor gives them back,
        // and leaves the client counts of other words alone.
        XCTAssertEqual(sup.reclaim(slot: 0), 0)
        XCTAssertEqual(sup.count(entry: e0), 0)
        XCTAssertEqual(sup.count(entry: u), 0)
        XCTAssertTrue(w1.tryAcquire(entry: e1, slot: 1, limit: 2))
        XCTAssertEqual(sup.reclaim(slot: 1), 0)
        XCTAssertEqual(sup.count(entry: e1), 0)
    }

    func testNameTableFillsAndThenCountsNothingNew() throws {
        let sup = try ClientCounter.create()
        defer { Posix.close(sup.fd) }
        var entries = Set<Int32>()
        for i in 0..<ClientCounter.nameCapacity {
            entries.insert(try XCTUnwrap(sup.nameEntry(ClientCounter.nameKey(kind: "u", "user\(i)"), claim: true)))
        }
        XCTAssertEqual(entries.count, ClientCounter.nameCapacity)
        XCTAssertNil(sup.nameEntry(ClientCounter.nameKey(kind: "u", "one-too-many"), claim: true))
        XCTAssertEqual(sup.nameEntry(ClientCounter.nameKey(kind: "u", "user7"), claim: true),
                       sup.nameEntry(ClientCounter.nameKey(kind: "u", "user7"), claim: false), "a full table still finds its names")
    }

    /// A supervisor re-executed from an older binary inherits a file of the client words only: the new
    /// image grows it, and what the old processes counted stays.
    func testAFileOfTheOldSizeIsGrown() throws {
        let old = try ClientCounter.create()
        defer { Posix.close(old.fd) }
        XCTAssertTrue(old.tryAcquire(slot: 0, limit: 10))
        XCTAssertEqual(ftruncate(old.fd, off_t(ClientCounter.byteCount)), 0)
        let grown = try ClientCounter.map(old.fd)
        XCTAssertEqual(Files.size(old.fd), ClientCounter.fileSize)
        XCTAssertEqual(grown.total, 1)
        let e = try XCTUnwrap(grown.nameEntry(ClientCounter.nameKey(kind: "d", "db"), claim: true))
        XCTAssertTrue(grown.tryAcquire(entry: e, slot: 3, limit: 1))
        XCTAssertEqual(grown.count(entry: e), 1)
    }
}
