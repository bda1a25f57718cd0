// PlainTextCache (Session/PlainTextCache.swift): a held text is recognised by its exact bytes only.
import XCTest
@testable import Worker

final class PlainTextCacheTests: XCTestCase {
    private func contains(_ c: PlainTextCache, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { c.probe($0.baseAddress!, $0.count).hit }
    }

    /// What `plainText` does with a text found plain: look it up, then note it.
    private func insert(_ c: PlainTextCache, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { b in
            let p = c.probe(b.baseAddress!, b.count)
            if !p.hit { c.notePlain(p, b.baseAddress!, b.count) }
        }
    }

    func testHeldTextsAndTheLengthsItHolds() {
        let c = PlainTextCache()
        let select = Array("SELECT 1".utf8) + [0]
        XCTAssertFalse(contains(c, select), "empty")
        insert(c, select)
        XCTAssertFalse(contains(c, select), "noted, not copied, the first time")
        insert(c, select)
        XCTAssertTrue(contains(c, select), "copied the second time")
        XCTAssertFalse(contains(c, Array("SELECT 2".utf8) + [0]))
        XCTAssertFalse(contains(c, Array("SELECT 1".utf8)), "a prefix of a held text")
        XCTAssertFalse(contains(c, select + [0]), "a held text and more")
        for n in [7, PlainTextCache.maxText + 1] {
            let t = [UInt8](repeating: UInt8(ascii: "x"), count: n)
            insert(c, t)
            insert(c, t)
            XCTAssertFalse(contains(c, t), "\(n) bytes are not held")
        }
        let longest = [UInt8](repeating: UInt8(ascii: "y"), count: PlainTextCache.maxText)
        insert(c, longest)
        insert(c, longest)
        XCTAssertTrue(contains(c, longest))
    }

    /// Every text once inserted is recognised until another takes its slot, and a copy with any one
    /// byte changed never is. Seeded (`SeededRandom` prints the seed).
    func testOnlyTheExactBytesMatch() {
        var rng = SeededRandom("PlainTextCacheTests")
        let seed = rng.seed
        let c = PlainTextCache()
        var held: [[UInt8]] = []
        for _ in 0..<500 {
            let n = 8 + Int(rng.next() % 120)
            let t = (0..<n).map { _ in UInt8(32 + rng.next() % 90) }
            insert(c, t)
            insert(c, t)
            XCTAssertTrue(contains(c, t), "seed \(seed)")
            held.append(t)
            var changed = t
            let at = Int(rng.next() % UInt64(n))
            changed[at] = changed[at] == UInt8(ascii: ";") ? UInt8(ascii: ":") : UInt8(ascii: ";")
            XCTAssertFalse(contains(c, changed), "seed \(seed): byte \(at) of \(n) changed")
        }
        // Slots are shared: of 500 texts in 64 slots at most 64 are still held, and the last one is.
        let still = held.filter { contains(c, $0) }.count
        XCTAssertLessThanOrEqual(still, PlainTextCache.slots)
        XCTAssertGreaterThan(still, 0)
        XCTAssertTrue(contains(c, held.last!))
    }
}
