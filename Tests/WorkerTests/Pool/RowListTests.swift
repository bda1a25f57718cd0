// The pool lists' links (Pool/RowList.swift), on a bare table: no worker, no sockets.
import XCTest
@testable import Worker

final class RowListTests: XCTestCase {
    /// The list from head to tail by `next`, checked against the walk from tail to head by `prev`.
    private func walk(_ t: Table<Server>, _ list: RowList, file: StaticString = #filePath, line: UInt = #line) -> [Int32] {
        var forward: [Int32] = [], i = list.head
        while i >= 0 && forward.count <= t.highWater { forward.append(i); i = t[i].links.next }
        var backward: [Int32] = []
        i = list.tail
        while i >= 0 && backward.count <= t.highWater { backward.append(i); i = t[i].links.prev }
        XCTAssertEqual(forward, backward.reversed(), "next and prev disagree", file: file, line: line)
        XCTAssertEqual(forward.count, list.count, "count is not the length", file: file, line: line)
        return forward
    }

    func testHeadTailAndUnlinkAnywhere() {
        let t = Table<Server>(capacity: 16)
        let rows = (0..<4).map { _ in t.allocate() }
        var list = RowList()
        t.pushHead(rows[0], &list)
        t.pushHead(rows[1], &list)
        t.pushTail(rows[2], &list)
        t.pushTail(rows[3], &list)
        XCTAssertEqual(walk(t, list), [rows[1], rows[0], rows[2], rows[3]])
        t.unlink(rows[0], &list)  // middle
        XCTAssertEqual(walk(t, list), [rows[1], rows[2], rows[3]])
        XCTAssertEqual(t[rows[0]].links.next, -1, "an unlinked row keeps no neighbour")
        XCTAssertEqual(t[rows[0]].links.prev, -1)
        t.unlink(rows[1], &list)  // head
        t.unlink(rows[3], &list)  // tail
        XCTAssertEqual(walk(t, list), [rows[2]])
        t.unlink(rows[2], &list)  // the last one
        XCTAssertEqual(walk(t, list), [])
        XCTAssertEqual(list.head, -1)
        XCTAssertEqual(list.tail, -1)
        t.pushTail(rows[3], &list)  // an empty list again takes a row at either end
        XCTAssertEqual(walk(t, list), [rows[3]])
    }

    /// Random pushes at either end and unlinks of any member, against an array.
    func testRandomOperationsMatchAnArray() {
        var rng = SeededRandom("testRandomOperationsMatchAnArray")
        let seed = rng.seed
        let t = Table<Server>(capacity: 64)
        let rows = (0..<40).map { _ in t.allocate() }
        var list = RowList()
        var model: [Int32] = []
        for step in 0..<5000 {
            let outside = rows.filter { !model.contains($0) }
            if !outside.isEmpty && (model.isEmpty || Bool.random(using: &rng)) {
                let r = outside.randomElement(using: &rng)!
                if Bool.random(using: &rng) { t.pushHead(r, &list); model.insert(r, at: 0) } else { t.pushTail(r, &list); model.append(r) }
            } else {
                let r = model.randomElement(using: &rng)!
                t.unlink(r, &list)
                model.removeAll { $0 == r }
            }
            let got = walk(t, list)
            XCTAssertEqual(got, model, "seed \(seed) step \(step)")
            if got != model { return }
        }
    }
}
