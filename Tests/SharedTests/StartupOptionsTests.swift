// The `options` startup parameter as PgBouncer 1.20+ reads it (StartupOptions).
import XCTest
@testable import Shared

final class StartupOptionsTests: XCTestCase {
    private func pairs(_ s: String, file: StaticString = #filePath, line: UInt = #line) -> [String] {
        guard case .pairs(let p) = StartupOptions.parse(s) else {
            XCTFail("refused: \(s)", file: file, line: line)
            return []
        }
        return p.map { "\($0.name)=\($0.value)" }
    }

    func testDashCAndDoubleDashPairs() {
        XCTAssertEqual(pairs("-c statement_timeout=1234 -c search_path=x"), ["statement_timeout=1234", "search_path=x"])
        XCTAssertEqual(pairs("  -c    datestyle=German,\\ YMD"), ["datestyle=German, YMD"])
        XCTAssertEqual(pairs("-ctimezone=Europe/Lisbon  -cdatestyle=German,\\ YMD"),
                       ["timezone=Europe/Lisbon", "datestyle=German, YMD"])
        XCTAssertEqual(pairs("--timezone=Europe/Lisbon  --datestyle=German,\\ YMD"),
                       ["timezone=Europe/Lisbon", "datestyle=German, YMD"])
        XCTAssertEqual(pairs("-c\ta=1\n--b=2"), ["a=1", "b=2"], "any C whitespace separates")
        XCTAssertEqual(pairs(""), [], "empty: no pairs")
    }

    /// A backslash takes the next character as it is; the name ends at the first `=` once unescaped.
    func testEscapes() {
        XCTAssertEqual(pairs("-c t\\imezone=\\E\\u\\r\\o\\pe/Lisbon  -c    dat\\estyle\\=\\Ge\\rman,\\ YMD"),
                       ["timezone=Europe/Lisbon", "datestyle=German, YMD"])
        XCTAssertEqual(pairs("-c a=back\\\\slash"), ["a=back\\slash"])
        XCTAssertEqual(pairs("-c a=x=y"), ["a=x=y"], "only the first = separates")
        XCTAssertEqual(pairs("-c a="), ["a="], "an empty value")
        XCTAssertEqual(pairs("-c a=b\\"), ["a=b"], "a trailing backslash escapes nothing")
        XCTAssertEqual(pairs("-c app=caf\u{e9}"), ["app=caf\u{e9}"], "UTF-8 passes through")
    }

    /// Anything but pairs refuses the client, as in PgBouncer: other switches, a pair without `=`,
    /// and (PgBouncer's reading) whitespace after the last pair.
    func testEverythingElseIsUnsupported() {
        for s in ["-d", "-c timezone", "-c", "timezone=UTC", "-c a=1 b=2", "-c a=1 ", " ", "-C a=1", "-B 100"] {
            XCTAssertEqual(StartupOptions.parse(s), .unsupported, s)
        }
        XCTAssertEqual(StartupOptions.unsupportedMessage,
                       "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed")
    }
}
