// scripts/check-config-readers as a test: a key that loads without a warning is read by the code that runs.
import Foundation
import XCTest

final class ConfigReadersTests: XCTestCase {
    /// The script prints one line per key whose property nothing outside Sources/Shared/Config reads
    /// (it needs the index store of this debug build, next to the test bundle).
    func testEveryKeyThatLoadsWithoutAWarningIsRead() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let process = Process()
        process.executableURL = root.appendingPathComponent("scripts/check-config-readers")
        process.currentDirectoryURL = root
        var environment = ProcessInfo.processInfo.environment
        if let bundle = Bundle.main.executableURL?.deletingLastPathComponent() {
            let store = bundle.appendingPathComponent("index/store").path
            if FileManager.default.fileExists(atPath: store) { environment["PGSWIFT_INDEX_STORE"] = store }
        }
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(text, "", "scripts/check-config-readers: give these keys a load-time warning or a reader")
        XCTAssertEqual(process.terminationStatus, 0, text)
    }
}
