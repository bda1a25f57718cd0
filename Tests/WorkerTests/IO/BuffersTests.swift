// The buffer pool and IOBuf (IO/Buffers.swift).
import XCTest
@testable import Worker
import Shared

final class BufferTests: XCTestCase {
    func testPoolReusesBuffers() {
        let pool = BufferPool(size: 1024, keepFree: 2)
        let a = pool.take()
        pool.give(a)
        let b = pool.take()
        XCTAssertEqual(a, b)
        XCTAssertEqual(pool.inUse, 1)
        pool.give(b)
        XCTAssertEqual(pool.inUse, 0)
    }

    func testCompactKeepsLiveBytes() {
        var buf = IOBuf()
        let mem = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 1)
        defer { mem.deallocate() }
        for i in 0..<16 { mem.storeBytes(of: UInt8(i), toByteOffset: i, as: UInt8.self) }
        buf.base = mem
        buf.start = 10
        buf.scan = 12
        buf.end = 16
        buf.compact()
        XCTAssertEqual(buf.start, 0)
        XCTAssertEqual(buf.scan, 2)
        XCTAssertEqual(buf.end, 6)
        XCTAssertEqual(mem.load(fromByteOffset: 0, as: UInt8.self), 10)
        XCTAssertEqual(mem.load(fromByteOffset: 5, as: UInt8.self), 15)
    }

    func testPendingOutGrowsAndDrains() {
        var out = PendingOut()
        XCTAssertTrue(out.isEmpty)
        let chunk = [UInt8](repeating: 7, count: 3000)
        chunk.withUnsafeBytes { out.append($0) }
        chunk.withUnsafeBytes { out.append($0) }
        XCTAssertEqual(out.end - out.start, 6000)
        out.consumed(5000)
        XCTAssertEqual(out.end - out.start, 1000)
        out.consumed(1000)
        XCTAssertTrue(out.isEmpty)
        XCTAssertNil(out.base, "a drained queue frees its memory")
    }

    /// A drained 1 KiB queue buffer goes to `SpareOutChunks` and the next queue that needs one takes it;
    /// larger ones, and any beyond the limit, are freed.
    func testDrainedSmallQueueBuffersAreReused() {
        var a = PendingOut(), b = PendingOut()
        [UInt8](repeating: 1, count: 100).withUnsafeBytes { a.append($0) }
        let first = a.base
        XCTAssertEqual(a.capacity, SpareOutChunks.size)
        let spare = SpareOutChunks.count
        a.consumed(100)
        XCTAssertEqual(SpareOutChunks.count, spare + 1)
        [UInt8](repeating: 2, count: 10).withUnsafeBytes { b.append($0) }
        XCTAssertEqual(b.base, first, "the drained buffer, taken again")
        XCTAssertEqual(SpareOutChunks.count, spare)
        // Grown past 1 KiB: its 1 KiB buffer is given back, the 2 KiB one is freed when drained.
        [UInt8](repeating: 3, count: 2000).withUnsafeBytes { b.append($0) }
        XCTAssertEqual(SpareOutChunks.count, spare + 1)
        XCTAssertEqual(b.capacity, 2048)
        b.consumed(2010)
        XCTAssertEqual(SpareOutChunks.count, spare + 1)
        // Never more than `limit` kept.
        var queues = [PendingOut](repeating: PendingOut(), count: SpareOutChunks.limit + 5)
        for i in queues.indices { [UInt8](repeating: 4, count: 8).withUnsafeBytes { queues[i].append($0) } }
        for i in queues.indices { queues[i].consumed(8) }
        XCTAssertEqual(SpareOutChunks.count, SpareOutChunks.limit)
    }
}
