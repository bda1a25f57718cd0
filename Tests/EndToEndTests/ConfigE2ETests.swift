// End to end: the command line (--check-config, --version, --help) and refusing a bad config.
import Foundation
import XCTest

final class ConfigE2ETests: XCTestCase {
    /// A valid config (no PostgreSQL needed to check it); `{{…}}` placeholders as in Pgswift.launch.
    private static let validConfig = """
        [databases]
        testdb = host=127.0.0.1 port=5432 dbname=testdb

        [pgbouncer]
        listen_addr = 127.0.0.1
        listen_port = {{PORT}}
        unix_socket_dir = {{DIR}}
        auth_type = trust
        auth_file = {{DIR}}/userlist.txt
        pool_mode = session

        [pgswift]
        workers = 2

        """

    /// The valid config with the line setting `key` replaced by `key = value`, and that line's number.
    private func config(setting key: String, to value: String) -> (text: String, line: Int) {
        var lines = Self.validConfig.components(separatedBy: "\n")
        let index = lines.firstIndex { $0.hasPrefix(key + " =") }!
        lines[index] = "\(key) = \(value)"
        return (lines.joined(separator: "\n"), index + 1)
    }

    private func writeConfig(_ text: String) throws -> (dir: String, path: String) {
        let dir = try makeTempDirectory(prefix: "cfg")
        let port = try freePort()
        let path = dir + "/pgswift.ini"
        try text.replacingOccurrences(of: "{{PORT}}", with: String(port))
            .replacingOccurrences(of: "{{DIR}}", with: dir)
            .write(toFile: path, atomically: false, encoding: .utf8)
        try "\"u_trust\" \"x\"\n".write(toFile: dir + "/userlist.txt", atomically: false, encoding: .utf8)
        return (dir, path)
    }

    func testVersionAndHelp() throws {
        let v = try Pgswift.runCLI(["--version"])
        XCTAssertEqual(v.status, 0, "\(v)")
        XCTAssertTrue(v.stdout.hasPrefix("pgswift "), "\(v)")
        let h = try Pgswift.runCLI(["--help"])
        XCTAssertEqual(h.status, 0, "\(h)")
        XCTAssertTrue((h.stdout + h.stderr).contains("pgswift"), "\(h)")
    }

    func testCheckConfigAcceptsValidConfig() throws {
        let (dir, path) = try writeConfig(Self.validConfig)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try Pgswift.runCLI(["--check-config", path])
        XCTAssertEqual(r.status, 0, "\(r)")
    }

    func testCheckConfigReportsFileAndLineOfBadValues() throws {
        let cases = [("pool_mode", "sometimes"), ("workers", "many"), ("listen_port", "not-a-port")]
        for (key, value) in cases {
            let (text, line) = config(setting: key, to: value)
            let (dir, path) = try writeConfig(text)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let r = try Pgswift.runCLI(["--check-config", path])
            XCTAssertEqual(r.status, 1, "'\(key) = \(value)': \(r)")
            XCTAssertTrue(r.stderr.contains("\(path):\(line):"),
                          "'\(key) = \(value)' should be reported at \(path):\(line): \(r.stderr)")
        }
    }

    func testStartingWithBadConfigExitsWithoutListening() throws {
        let (text, line) = config(setting: "pool_mode", to: "sometimes")
        let px = try Pgswift.launch(ini: text, userlist: "\"u_trust\" \"x\"\n")
        defer { px.stop() }
        let status = px.waitForExit(timeout: 30)
        XCTAssertEqual(status, 1, "exit status with a bad config; log:\n\(px.log())")
        XCTAssertTrue(px.log().contains("\(px.configPath):\(line):"), px.log())
        XCTAssertFalse(TestSocket.canConnect(port: px.port), "something listens on the port of a refused config")
    }
}
