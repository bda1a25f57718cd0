// Files by path: open, read a whole (small) file, create, remove; the working directory; fd 2's target.
import Glibc
import CLinux

public enum Files {
    /// open(2) with O_CLOEXEC added (no descriptor of ours leaks into a spawned child); EINTR retried.
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0) throws(SyscallError) -> Int32 {
        try Posix.retryingInterrupts("open(\(path))") { Glibc.open(path, flags | cl_O_CLOEXEC(), mode) }
    }

    public static func openForReading(_ path: String) throws(SyscallError) -> Int32 {
        try open(path, flags: O_RDONLY)
    }

    /// Opens (creating it with `mode` if needed) for appending: each write lands at the end (log files).
    public static func openForAppending(_ path: String, mode: mode_t) throws(SyscallError) -> Int32 {
        try open(path, flags: O_WRONLY | O_APPEND | O_CREAT, mode: mode)
    }

    /// The first `limit` bytes of the file at `path` (all of it when shorter). With `longerIsError`, a
    /// longer file fails with EFBIG instead of being cut. Reads until end of file rather than trusting
    /// the size fstat reports: /proc files report 0.
    public static func readContents(_ path: String, limit: Int, longerIsError: Bool = false) throws(SyscallError) -> [UInt8] {
        let fd = try openForReading(path)
        defer { Posix.close(fd) }
        // One byte over the limit, so a file of exactly `limit` bytes is told from a longer one.
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.min(limit + 1, 65536), alignment: 1)
        defer { chunk.deallocate() }
        var out: [UInt8] = []
        while out.count <= limit {
            let n = try Posix.retryingInterrupts("read(\(path))") { Glibc.read(fd, chunk.baseAddress, chunk.count) }
            if n == 0 { break }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
        }
        if out.count > limit {
            if longerIsError { throw SyscallError("read(\(path))", .fileTooLarge) }
            out.removeSubrange(limit...)
        }
        return out
    }

    /// Creates or truncates `path` with `contents`; throws with the failing call and errno.
    public static func write(_ path: String, _ contents: String, mode: mode_t = 0o644) throws(SyscallError) {
        let fd = try open(path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: mode)
        defer { Posix.close(fd) }
        var text = contents
        let ok = text.withUTF8 { Posix.writeAll(fd, UnsafeRawBufferPointer($0)) }
        if !ok { throw SyscallError("write(\(path))", .current) }
    }

    /// The size of the file open as `fd` (fstat); nil when fstat fails.
    public static func size(_ fd: Int32) -> Int? {
        var st = stat()
        return fstat(fd, &st) == 0 ? Int(st.st_size) : nil
    }

    /// True if `fd` is open on a directory (fstat).
    public static func isDirectory(_ fd: Int32) -> Bool {
        var st = stat()
        return fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// unlink(2); a missing file is not an error worth reporting to the callers (cleanup at exit).
    public static func remove(_ path: String) {
        _ = unlink(path)
    }

    /// access(F_OK): something exists at `path`.
    public static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    public static func currentDirectory() -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buf, buf.count) != nil else { return nil }
        return cStringText(buf)
    }

    /// Points `fd` at /dev/null (dup2); children spawned afterwards inherit the redirection.
    public static func redirectToDevNull(_ fd: Int32) {
        guard let null = try? open("/dev/null", flags: O_WRONLY) else { return }
        _ = dup2(null, fd)
        Posix.close(null)
    }
}
