// End to end: a pool's welcome parameters learnt by one worker answer logins on the others
// (Worker/Login/SharedWelcome.swift, Supervisor/Workers/SharedWelcomes.swift).
import Foundation
import XCTest

final class SharedWelcomeTests: XCTestCase {
    /// max_user_connections = 1 and session mode: client A holds the user's only server on one worker.
    /// A client of the same pool that lands on the other worker logs in at once (as with PgBouncer's
    /// one process, where the pool's welcome is known) and waits for a server at its first query, not
    /// at login: it would otherwise wait for a server of its own to log in, which the limit forbids
    /// while A stays. Once A leaves, its query runs.
    func testALoginOnAnotherWorkerIsAnsweredWhileTheOnlyServerIsHeld() throws {
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.poolMode = "session"
        s.userSettings = [("u_md5", "max_user_connections=1")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let a = try WireClient.connect(port: px.port, user: "u_md5", database: "testdb", timeout: 10)
        XCTAssertEqual(try a.query("select 1"), [["1"]])
        let slotA = a.backendProcessID >> 20
        var other: WireClient?
        // Clients that land on A's worker stay connected (logged in, no server): a worker holding more
        // than its share of clients passes the listener on, so the next ones reach the other worker.
        var sameWorker: [WireClient] = []
        defer { sameWorker.forEach { $0.close() } }
        var attempts = 0
        while other == nil && attempts < 60 {
            attempts += 1
            let started = Date()
            let b: WireClient
            do {
                b = try WireClient.connect(port: px.port, user: "u_md5", database: "testdb", timeout: 5)
            } catch {
                XCTFail("a login waited \(String(format: "%.1f", Date().timeIntervalSince(started))) s and failed "
                        + "(\(error)) while A held the user's only server\n\(px.log().suffix(3000))")
                break
            }
            if b.backendProcessID >> 20 == slotA { sameWorker.append(b); continue }
            other = b
        }
        let b = try XCTUnwrap(other, "no client landed on the other worker in \(attempts) attempts")
        defer { b.close() }
        print("shared welcome: a login on the other worker answered while A held the server (\(attempts) attempts)")
        a.close()
        XCTAssertEqual(try b.query("select 2"), [["2"]], px.log().suffix(3000).description)
    }
}
