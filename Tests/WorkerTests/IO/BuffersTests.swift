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
}
