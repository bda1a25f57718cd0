// A deadline for each end-to-end test: one that hangs stops the run with its name printed, instead of
// CI killing a silent run at its time limit (the log, block-buffered into a file, would end mid-line).
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class TestWatchdog: NSObject, XCTestObservation, @unchecked Sendable {
    /// Seconds one test may take (PGSWIFT_TEST_DEADLINE; default 15 minutes, far above the slowest).
    static let limit = Double(ProcessInfo.processInfo.environment["PGSWIFT_TEST_DEADLINE"] ?? "") ?? 900

    private static let shared = TestWatchdog()
    private static let installed: Void = {
        XCTestObservationCenter.shared.addTestObserver(shared)
        let t = Thread { shared.watch() }
        t.name = "test watchdog"
        t.start()
    }()

    /// Called by the harness's entry points (PostgreSQL, pgswift); idempotent.
    static func install() { _ = installed }

    private let lock = NSLock()
    private var current = "(the test that installed the watchdog)"
    private var since = monotonicNow()

    func testCaseWillStart(_ testCase: XCTestCase) {
        fflush(nil)
        lock.lock(); current = testCase.name; since = monotonicNow(); lock.unlock()
    }

    func testCaseDidFinish(_ testCase: XCTestCase) {
        fflush(nil)
        lock.lock(); current = "(between tests, after \(testCase.name))"; since = monotonicNow(); lock.unlock()
    }

    private func watch() {
        while true {
            sleep(5)
            lock.lock()
            let (name, took) = (current, monotonicNow() - since)
            lock.unlock()
            if took > Self.limit {
                fflush(nil)
                let text = "\nWATCHDOG: \(name) has run for \(Int(took)) s (PGSWIFT_TEST_DEADLINE \(Int(Self.limit)) s): "
                    + "stopping the test run here\n"
                _ = text.withCString { write(2, $0, strlen($0)) }
                // _exit: the harness's guard processes stop the PostgreSQL and pgswift it started.
                _exit(3)
            }
        }
    }
}
