// ClientStatementNames (StatementNames.swift): the byte lookup and its memo agree with the map after
// every kind of change.
import XCTest
@testable import Worker

final class StatementNamesTests: XCTestCase {
    private func lookup(_ names: ClientStatementNames, _ name: String) -> Int32? {
        Array(name.utf8).withUnsafeBytes { names.lookup($0) }
    }

    func testTheMemoNeverOutlivesAChange() {
        let n = ClientStatementNames()
        XCTAssertNil(lookup(n, "s1"))
        n["s1"] = 7
        XCTAssertEqual(lookup(n, "s1"), 7)
        XCTAssertEqual(lookup(n, "s1"), 7, "answered from the memo")
        XCTAssertNil(lookup(n, "s2"))
        XCTAssertNil(lookup(n, "s"), "a prefix of the remembered name")
        XCTAssertNil(lookup(n, "s1\u{0}"), "the remembered name and a zero byte")
        n["s1"] = 8
        XCTAssertEqual(lookup(n, "s1"), 8)
        n.removeValue(forKey: "s1")
        XCTAssertNil(lookup(n, "s1"))
        n["s1"] = 9
        XCTAssertEqual(lookup(n, "s1"), 9)
        n.removeAll()
        XCTAssertNil(lookup(n, "s1"))
        XCTAssertTrue(n.isEmpty)
    }

    func testNamesOfEveryLengthAroundTheMemosSize() {
        let n = ClientStatementNames()
        let names = (0...20).map { String(repeating: "x", count: $0) } + ["__asyncpg_stmt_1__", "0123456789abcdef"]
        for (i, name) in names.enumerated() { n[name] = Int32(i) }
        for _ in 0..<2 {
            for (i, name) in names.enumerated() { XCTAssertEqual(lookup(n, name), Int32(i), "\(name.count) bytes") }
        }
        XCTAssertEqual(n.count, names.count)
    }

    /// Random changes and lookups over a few names against a plain dictionary.
    func testRandomChangesAgreeWithADictionary() {
        var seed = UInt64(UInt32(truncatingIfNeeded: time(nil)))
        print("StatementNamesTests seed \(seed)")
        func next(_ bound: Int) -> Int {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Int((seed >> 33) % UInt64(bound))
        }
        let pool = ["a", "b", "s1", "S_1", "P_0", "sixteen_bytes_ab", "seventeen_bytes_a", ""]
        let n = ClientStatementNames()
        var reference: [String: Int32] = [:]
        for step in 0..<20_000 {
            let name = pool[next(pool.count)]
            switch next(10) {
            case 0, 1: let id = Int32(next(50)); n[name] = id; reference[name] = id
            case 2: n.removeValue(forKey: name); reference.removeValue(forKey: name)
            case 3 where next(20) == 0: n.removeAll(); reference.removeAll()
            default: break
            }
            XCTAssertEqual(lookup(n, name), reference[name], "step \(step), \(name), seed printed above")
            if lookup(n, name) != reference[name] { return }
        }
        XCTAssertEqual(n.map, reference)
    }
}
