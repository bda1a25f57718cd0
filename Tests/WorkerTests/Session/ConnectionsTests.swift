// Record tables (Session/Connections.swift); the epoll token is tested in SharedTests/PackedIDTests.
import XCTest
@testable import Worker
import Shared

final class TableTests: XCTestCase {
    func testAllocateReleaseAndGrow() {
        let t = Table<Client>(capacity: 16)
        var seen = Set<Int32>()
        for _ in 0..<40 {
            let i = t.allocate()
            XCTAssertFalse(seen.contains(i))
            seen.insert(i)
            t[i].io.fd = i + 100
        }
        XCTAssertEqual(t.used, 40)
        XCTAssertGreaterThanOrEqual(t.capacity, 40)
        for i in seen { XCTAssertEqual(t[i].io.fd, i + 100, "records survive growth") }
        let first = seen.first!
        t.release(first)
        XCTAssertEqual(t.used, 39)
        XCTAssertEqual(t.allocate(), first, "a released slot is reused")
    }

    /// Pools are freed (pool_idle_timeout): `indices` walks only records in use, in index order, and a
    /// freed index is the next one handed out, its record fresh.
    func testFreedPoolLeavesAHoleThatIsReused() {
        let t = Table<Pool>(capacity: 16)
        for n in 0..<20 {
            var p = Pool(database: "db", user: "u\(n)", entry: DatabaseEntry(name: "db"), mode: .session, size: 1)
            p.inUse = true
            t.append(p)
        }
        XCTAssertEqual(Array(t.indices), Array(0..<20))
        t[5] = Pool()
        t.release(5)
        t[17] = Pool()
        t.release(17)
        XCTAssertEqual(Array(t.indices), Array(0..<20).filter { $0 != 5 && $0 != 17 })
        XCTAssertEqual(t.highWater, 20)
        var p = Pool(database: "db2", user: "x", entry: DatabaseEntry(name: "db2"), mode: .transaction, size: 2)
        p.inUse = true
        let i = t.append(p)
        XCTAssertTrue(i == 5 || i == 17, "a freed index is reused: \(i)")
        XCTAssertEqual(t[i].user, "x")
        XCTAssertEqual(t[i].totals.queryCount, 0)
        XCTAssertEqual(Array(t.indices).count, 19)
    }

    func testGrowthStopsAtTargetFirst() {
        let t = Table<Client>(capacity: 16, growthTarget: 40)
        for _ in 0..<17 { _ = t.allocate() }
        XCTAssertEqual(t.capacity, 32)
        for _ in 17..<33 { _ = t.allocate() }
        XCTAssertEqual(t.capacity, 40, "doubling stops at the target (max_client_conn) while below it")
        for _ in 33..<41 { _ = t.allocate() }
        XCTAssertEqual(t.capacity, 80, "past the target it doubles again")
    }
}

final class RecordSizeTests: XCTestCase {
    /// The client table holds max_client_conn records whether used or not: every byte of a Client is a
    /// byte per connection (the bench's idle scenario). Its fields go by size, so none is padding.
    func testClientRecordIsPacked() {
        XCTAssertLessThanOrEqual(MemoryLayout<Client>.stride, 216)
        XCTAssertEqual(MemoryLayout<Client>.offset(of: \Client.pool), MemoryLayout<Endpoint>.size,
                       "the first 4-byte field goes right after the Endpoint's flags")
    }
}
