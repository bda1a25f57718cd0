// Base class of the Shared tests that write files (configs, hba and ident files, certificates).
import Foundation
import XCTest

/// A fresh folder per test (`tempDir`, named pgswift-<folderPrefix>-<uuid> in the system's temporary
/// folder), removed after it.
class TemporaryFolderCase: XCTestCase {
    private(set) var tempDir = ""

    /// Names the folder after the test class, for someone looking at /tmp while a test runs.
    class var folderPrefix: String { "test" }

    override func setUpWithError() throws {
        try super.setUpWithError()
        tempDir = NSTemporaryDirectory() + "pgswift-\(Self.folderPrefix)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tempDir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: tempDir)
        try super.tearDownWithError()
    }

    /// Writes `text` to `name` (a path relative to the folder; its own folders are made), returning the
    /// whole path.
    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        let path = tempDir + "/" + name
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A self-signed certificate for `cn` (default: `name`), with `subjectAltName` when given, and its
    /// key, made with the openssl CLI in the folder as <name>.crt and <name>.key.
    func selfSignedCertificate(_ name: String, cn: String? = nil, subjectAltName: String? = nil) throws
        -> (cert: String, key: String) {
        let cert = "\(tempDir)/\(name).crt", key = "\(tempDir)/\(name).key"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                       "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=\(cn ?? name)"]
            + (subjectAltName.map { ["-addext", "subjectAltName=\($0)"] } ?? [])
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "openssl req failed")
        return (cert, key)
    }
}
