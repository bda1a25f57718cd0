// The one place pgswift's version is written down (`pgswift --version`, the worker, the admin console).
public enum PgswiftVersion {
    /// Stored as one C string in the binary's read-only data (pgswift-version=, then the version), so
    /// the release a binary carries can be found in the file itself (the binary-upgrade test makes a
    /// "new release" of the built binaries by rewriting exactly this string; docs/ARCHITECTURE.md).
    static let marker: StaticString = "pgswift-version=0.1.0"

    public static var string: String {
        let m = marker
        let all = UnsafeBufferPointer(start: m.utf8Start, count: m.utf8CodeUnitCount)
        return String(decoding: all.dropFirst(16), as: UTF8.self)
    }
}
