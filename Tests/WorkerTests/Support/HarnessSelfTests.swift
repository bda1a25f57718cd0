// The harness itself: it cleans up every descriptor, and it can see a wrong answer.
import XCTest
import Foundation
@testable import Worker
import Shared

final class HarnessSelfTests: XCTestCase {
    private func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }

    func testEveryDescriptorIsClosedAfterwards() throws {
        let before = openDescriptors()
        do {
            var h: WorkerHarness? = try WorkerHarness()
            let a = h!.login(), b = h!.login(tcp: true)
            let s = try XCTUnwrap(h!.waitServers(1))
            h!.roundTrip(a, s, "begin", status: "T")
            b.send(FE.query("select 2"))
            let s1 = try XCTUnwrap(h!.waitServers(2))
            h!.answerQuery(s1)
            a.close()  // inside a transaction: ROLLBACK sent for it
            _ = h!.next(s)
            h!.close()
            h = nil
        }
        XCTAssertEqual(openDescriptors(), before, "the harness leaked descriptors")
    }

    func testSettleSeesNothingWhenNothingHappens() throws {
        let h = try WorkerHarness()
        defer { h.close() }
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.settle()
        XCTAssertNil(s.nextMessage())
        XCTAssertTrue(a.reader.unread.isEmpty)
        a.send(FE.query("select 1"))
        h.settle()
        XCTAssertEqual(s.nextMessage()?.firstString, "select 1", "settle turns the loop until the bytes moved")
    }
}
