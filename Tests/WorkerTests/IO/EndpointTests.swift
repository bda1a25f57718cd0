// Endpoint (IO/Endpoint.swift): pgswift's queued bytes and the client's bytes after them in one
// sendmsg (`sendQueued`), whole or cut anywhere by a full socket, always in that order.
import XCTest
import Glibc
@testable import Worker
import Shared

final class EndpointTests: XCTestCase {
    private var fds: [Int32] = []

    override func tearDown() {
        fds.forEach { Posix.close($0) }
        fds = []
        super.tearDown()
    }

    /// A connected non-blocking stream pair: the endpoint's end and the peer's.
    private func pair(sendBuffer: Int32? = nil) throws -> (Endpoint, Int32) {
        let (a, b) = try Posix.socketPair(type: Int32(SOCK_STREAM.rawValue))
        fds += [a, b]
        if var size = sendBuffer {
            setsockopt(a, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var e = Endpoint(writable: true)
        e.fd = a
        return (e, b)
    }

    /// Everything the peer can read now.
    private func drain(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return out }
            out += chunk[0..<n]
        }
    }

    func testQueuedBytesAndTheClientsGoInOneCallInOrder() throws {
        var (e, peer) = try pair()
        let queued = [UInt8](repeating: 0x41, count: 100), client = [UInt8](repeating: 0x42, count: 50)
        queued.withUnsafeBytes { e.out.append($0) }
        let n = try client.withUnsafeBytes { try e.sendQueued(then: $0.baseAddress!, $0.count) }
        XCTAssertEqual(n, 50)
        XCTAssertTrue(e.out.isEmpty)
        XCTAssertTrue(e.writable)
        XCTAssertEqual(drain(peer), queued + client)
    }

    /// A socket that takes a little at a time: the queue is written before any client byte, and what
    /// went is accounted on both sides, so the peer reads the same stream in the end.
    func testAFullSocketCutsTheStreamAnywhereAndNothingIsLostOrReordered() throws {
        var (e, peer) = try pair(sendBuffer: 4096)
        let seed = UInt64(UInt32(truncatingIfNeeded: time(nil)))
        print("EndpointTests seed \(seed)")
        var rng = seed
        func byte() -> UInt8 {
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: rng >> 33)
        }
        let queued = (0..<300_000).map { _ in byte() }, client = (0..<200_000).map { _ in byte() }
        queued.withUnsafeBytes { e.out.append($0) }
        var sent = 0, received: [UInt8] = [], partialQueue = false, calls = 0
        while sent < client.count && calls < 100_000 {
            calls += 1
            if e.out.isEmpty {
                // The queue is out: the rest of the client's bytes go as plain sends would.
                let r = try client.withUnsafeBytes { try e.send($0.baseAddress! + sent, client.count - sent) }
                if case .processed(let n) = r { sent += n }
            } else {
                let before = e.out.end - e.out.start
                let n = try client.withUnsafeBytes { try e.sendQueued(then: $0.baseAddress! + sent, client.count - sent) }
                if n == 0 && !e.out.isEmpty && e.out.end - e.out.start < before { partialQueue = true }
                XCTAssertTrue(n == 0 || e.out.isEmpty, "client bytes went before the whole queue (seed \(seed))")
                sent += n
            }
            received += drain(peer)
        }
        received += drain(peer)
        XCTAssertTrue(partialQueue, "the socket never cut the queue: the test proves nothing")
        XCTAssertEqual(received.count, queued.count + client.count)
        XCTAssertTrue(received == queued + client, "the stream differs (seed \(seed))")
    }
}
