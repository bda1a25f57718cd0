// Tests of userlist.txt (auth_file) parsing: quoting, comments, raw password forms, errors by line.
import Foundation
import XCTest
@testable import Shared

final class ConfigUserlistTests: XCTestCase {
    private func parseError(_ text: String, _ sourceLine: UInt = #line) -> ConfigError? {
        do {
            _ = try Userlist.parse(text: text, file: "userlist.txt")
            XCTFail("expected an error", line: sourceLine)
            return nil
        } catch {
            return error
        }
    }

    func testParsesEntriesQuotesAndComments() throws {
        let text = [
            "; PgBouncer comment",
            "# shell-style comment",
            "",
            "\"alice\" \"plain secret\"",
            "  \"bob\"   \"md5a3556571e93b0d20722ba62be61e8c2d\"  trailing fields are ignored",
            "\"carol\" \"SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy\"",
            "\"say \"\"hi\"\"\"\t\"pa\"\"ss\"",
            "\"empty\" \"\"",
            "\"alice\" \"second definition wins\"\r",
            "\"\u{00FC}ser\" \"\u{00E9}t\u{00E9}\"",
        ].joined(separator: "\n")
        let list = try Userlist.parse(text: text, file: "userlist.txt")
        XCTAssertEqual(list.entries.count, 6)
        XCTAssertEqual(list.password(for: "alice"), "second definition wins")
        XCTAssertEqual(list.password(for: "bob"), "md5a3556571e93b0d20722ba62be61e8c2d")
        XCTAssertEqual(list.password(for: "carol"), "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy")
        XCTAssertEqual(list.password(for: "say \"hi\""), "pa\"ss")
        XCTAssertEqual(list.password(for: "empty"), "")
        XCTAssertEqual(list.password(for: "\u{00FC}ser"), "\u{00E9}t\u{00E9}")
        XCTAssertNil(list.password(for: "nobody"))
        XCTAssertNil(list.password(for: "Alice"), "user names are case-sensitive")
    }

    func testEmptyFile() throws {
        XCTAssertTrue(try Userlist.parse(text: "", file: "u").entries.isEmpty)
        XCTAssertTrue(try Userlist.parse(text: "\n\n  \n;x\n", file: "u").entries.isEmpty)
    }

    func testBadLineNamesFileAndLine() throws {
        let e = try XCTUnwrap(parseError("\"a\" \"1\"\n; fine\n\nbob \"2\"\n"))
        XCTAssertEqual(e.file, "userlist.txt")
        XCTAssertEqual(e.line, 4)
        XCTAssertEqual(e.description, "userlist.txt:4: expected a double-quoted user name at the start of the line")
        XCTAssertEqual(parseError("\"a\" \"1\"\n\"b\n")?.line, 2, "unterminated user name")
        XCTAssertEqual(parseError("\"a\"\n")?.line, 1, "missing password")
        XCTAssertEqual(parseError("\"a\" secret\n")?.line, 1, "unquoted password")
        XCTAssertEqual(parseError("\"a\" \"open\n\"b\" \"x\"\n")?.line, 1, "unterminated password")
        XCTAssertEqual(parseError("\"\" \"x\"\n")?.line, 1, "empty user name")
    }

    func testLoad() throws {
        let path = NSTemporaryDirectory() + "pgswift-userlist-\(UUID().uuidString).txt"
        try "\"u\" \"p\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertEqual(try Userlist.load(path: path).password(for: "u"), "p")
        do {
            _ = try Userlist.load(path: path + ".missing")
            XCTFail("expected an error")
        } catch {
            XCTAssertEqual(error.file, path + ".missing")
            XCTAssertEqual(error.line, 0)
        }
    }
}
