// Tests of GET /health's verdict: 200 only while clients are taken and a backend is up, 503 while draining.
import XCTest
@testable import Supervisor

final class ServiceHealthTests: XCTestCase {
    private let serving = ServiceHealth(stopping: false, upgrading: false, readyWorkers: 2, workerSlots: 2,
                                        backends: 2, backendsUp: 1)

    func testHealthyWhileServingWithOneBackendUp() {
        XCTAssertNil(serving.problem)
        XCTAssertTrue(serving.isHealthy)
    }

    func testDrainingForAStopOrAnUpgradeIsUnavailable() {
        var s = serving
        s.stopping = true
        XCTAssertEqual(s.problem, "shutting down")
        s = serving
        s.upgrading = true
        XCTAssertEqual(s.problem, "upgrade in progress")
    }

    func testNoBackendUpIsUnavailable() {
        var s = serving
        s.backendsUp = 0
        XCTAssertEqual(s.problem, "no backend is up (2 checked)")
        s.backends = 0
        XCTAssertEqual(s.problem, "no backend configured")
    }

    func testAWorkerSlotWithoutAReadyProcessIsUnavailable() {
        var s = serving
        s.readyWorkers = 1
        XCTAssertEqual(s.problem, "1 of 2 workers ready")
    }

    func testDrainingWinsOverEverythingElse() {
        let s = ServiceHealth(stopping: true, upgrading: true, readyWorkers: 0, workerSlots: 2, backends: 0, backendsUp: 0)
        XCTAssertEqual(s.problem, "shutting down")
    }

    func testAnswers() {
        func answer(_ h: ServiceHealth) -> String {
            guard case .answer(let bytes) = MetricsHTTP.route(HTTPRequest(method: "GET", path: "/health", version: "HTTP/1.1"),
                                                              health: h) else { return "" }
            return String(decoding: bytes, as: UTF8.self)
        }
        XCTAssertTrue(answer(serving).hasPrefix("HTTP/1.1 200 OK\r\n"))
        var down = serving
        down.backendsUp = 0
        XCTAssertTrue(answer(down).hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        XCTAssertTrue(answer(down).hasSuffix("\r\n\r\nunavailable: no backend is up (2 checked)\n"))
    }
}
