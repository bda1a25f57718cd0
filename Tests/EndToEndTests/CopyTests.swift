// End to end: 50+ MB of COPY in and back out through pgswift in transaction mode, byte for byte.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class CopyTests: XCTestCase {
    private static let table = "txpool_copy"
    private static let rows = 450_000

    /// psql's `\copy … from` a deterministic 50+ MB file through pgswift, then `\copy (… order by id) to`
    /// another file: same SHA-256, same size, and the row count matches. Meanwhile another client
    /// keeps using the pool, so the COPY's server must stay linked to it throughout.
    func testCopyInAndOutIsByteIdenticalInTransactionMode() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 2, poolSize: 2))
        defer { px.stop() }
        let target = TxFixtures.target(px)

        let dir = try makeTempDirectory(prefix: "copy")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let input = dir + "/in.tsv", output = dir + "/out.tsv"
        let size = try Self.writeDeterministicRows(to: input, count: Self.rows)
        XCTAssertGreaterThan(size, 50 * 1024 * 1024, "the generated file is too small")

        try pg.adminQuery([
            "drop table if exists \(Self.table)",
            "create table \(Self.table) (id int not null, a text, b text, n bigint)",
            "grant all on \(Self.table) to \(TxFixtures.role)",
        ], database: "testdb")
        defer { _ = try? pg.adminQuery("drop table if exists \(Self.table)", database: "testdb") }

        let load = try PgbenchRun.spawnLoad(target, dir: dir, clients: 2, seconds: 3)
        defer { load.terminate(SIGKILL, grace: 0) }

        var started = monotonicNow()
        let copyIn = try Psql.run(target, "\\copy \(Self.table) from '\(input)'", timeout: 600)
        let inSeconds = monotonicNow() - started
        XCTAssertTrue(copyIn.succeeded, "COPY FROM: \(copyIn)\nlog:\n\(px.log().suffix(3000))")

        let count = try Psql.run(target, "select count(*) from \(Self.table)")
        XCTAssertEqual(count.stdout.trimmed, String(Self.rows), "\(count)")

        started = monotonicNow()
        let copyOut = try Psql.run(target, "\\copy (select * from \(Self.table) order by id) to '\(output)'",
                                   timeout: 600)
        let outSeconds = monotonicNow() - started
        XCTAssertTrue(copyOut.succeeded, "COPY TO: \(copyOut)\nlog:\n\(px.log().suffix(3000))")

        let outSize = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? nil
        XCTAssertEqual(outSize, size, "COPY TO wrote a different number of bytes")
        let inHash = try sha256(input), outHash = try sha256(output)
        XCTAssertEqual(inHash, outHash, "COPY round trip through pgswift changed the data")
        print("COPY through pgswift (debug build, informative): \(size) bytes, in \(String(format: "%.1f", inSeconds)) s, " +
              "out \(String(format: "%.1f", outSeconds)) s, sha256 \(inHash)")

        XCTAssertNotNil(load.wait(timeout: 60), "the side load did not finish")
        XCTAssertEqual(load.poll(), 0, "side load: \(load.stderrText())")
        let after = try Psql.run(target, "select 1")
        XCTAssertEqual(after.stdout.trimmed, "1", "\(after)")
        XCTAssertTrue(px.isRunning)
    }

    /// A COPY FROM that fails on a bad line half-way (after megabytes went through) is rolled back
    /// and leaves its server usable: the pool's only server serves the next clients.
    func testFailedCopyLeavesThePoolUsable() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 1, poolSize: 1))
        defer { px.stop() }
        let target = TxFixtures.target(px)
        let dir = try makeTempDirectory(prefix: "copyfail")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = dir + "/good.tsv", bad = dir + "/bad.tsv"
        _ = try Self.writeDeterministicRows(to: good, count: 40_000)
        let text = readTextFile(good)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let broken = lines[0..<20_000].joined(separator: "\n") + "\nnot-a-number\tx\ty\t1\n"
            + lines[20_000...].joined(separator: "\n")
        try broken.write(toFile: bad, atomically: false, encoding: .utf8)

        let table = Self.table + "_fail"
        try pg.adminQuery([
            "drop table if exists \(table)",
            "create table \(table) (id int not null, a text, b text, n bigint)",
            "grant all on \(table) to \(TxFixtures.role)",
        ], database: "testdb")
        defer { _ = try? pg.adminQuery("drop table if exists \(table)", database: "testdb") }

        let failed = try Psql.run(target, "\\copy \(table) from '\(bad)'", timeout: 300)
        XCTAssertFalse(failed.succeeded, "a COPY with a bad line succeeded: \(failed)")
        XCTAssertFalse(failed.timedOut, "the failing COPY hung")
        XCTAssertTrue(failed.stderr.contains("invalid input syntax"), "\(failed)")

        let count = try Psql.run(target, "select count(*) from \(table)")
        XCTAssertEqual(count.stdout.trimmed, "0", "\(count)\nlog:\n\(px.log().suffix(3000))")
        let ok = try Psql.run(target, "\\copy \(table) from '\(good)'", timeout: 300)
        XCTAssertTrue(ok.succeeded, "\(ok)\nlog:\n\(px.log().suffix(3000))")
        let again = try Psql.run(target, "select count(*) from \(table)")
        XCTAssertEqual(again.stdout.trimmed, "40000", "\(again)")
    }

    /// `count` rows of COPY text format: id, a text of mixed ASCII, multi-byte UTF-8 and escaped
    /// tabs/backslashes, a text that is sometimes NULL, a bigint. Always the same bytes (a fixed
    /// xorshift seed); every field is already in the form COPY TO writes back. Returns the size.
    static func writeDeterministicRows(to path: String, count: Int) throws -> Int {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
        // A pool of tokens; rows take slices that start and end on token boundaries (valid UTF-8).
        let tokens: [[UInt8]] = ["alpha", "beta", "gamma", " ", " ", "42", "x", "Zürich", "naïve", "€",
                                 "日本語", "\\t", "\\\\", "\\n", ",", ";", "'", "\"", "{}", "()", "-", "_"]
            .map { Array($0.utf8) }
        var pool: [UInt8] = []
        var bounds: [Int] = [0]
        for _ in 0..<20_000 {
            pool += tokens[Int(next() % UInt64(tokens.count))]
            bounds.append(pool.count)
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw E2EError("open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1 << 20 + 4096)
        var total = 0
        func flush() throws {
            let n = buffer.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n == buffer.count else { throw E2EError("write \(path): short write") }
            total += n
            buffer.removeAll(keepingCapacity: true)
        }
        let tab = UInt8(ascii: "\t"), newline = UInt8(ascii: "\n")
        for id in 1...count {
            let r = next()
            buffer += String(id).utf8
            buffer.append(tab)
            let start = Int(r % UInt64(bounds.count - 80))
            buffer += pool[bounds[start]..<bounds[start + 8 + Int((r >> 20) % 40)]]
            buffer.append(tab)
            if (r >> 40) % 50 == 0 {
                buffer += Array("\\N".utf8)
            } else {
                let s2 = Int((r >> 8) % UInt64(bounds.count - 20))
                buffer += pool[bounds[s2]..<bounds[s2 + 1 + Int((r >> 32) % 12)]]
            }
            buffer.append(tab)
            buffer += String(Int64(bitPattern: r) >> 3).utf8
            buffer.append(newline)
            if buffer.count >= 1 << 20 { try flush() }
        }
        try flush()
        return total
    }

    private func sha256(_ path: String) throws -> String {
        let r = try runCommand(["sha256sum", path], timeout: 120)
        guard r.succeeded, let hash = r.stdout.split(separator: " ").first else {
            throw E2EError("sha256sum \(path): \(r)")
        }
        return String(hash)
    }
}
