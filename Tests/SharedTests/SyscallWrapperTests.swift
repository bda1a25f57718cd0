// Tests of Shared/System's retry helpers (with a scripted syscall) and of the file, process, poll, thread
// and address wrappers against the real kernel on temp files.
import Glibc
import XCTest
@testable import Shared

final class SyscallWrapperTests: XCTestCase {
    private var dir = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/pgswift-syscalls-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        XCTAssertNotNil(made)
        dir = String(cString: template)
    }

    override func tearDown() {
        for name in ["a", "b", "log", "big"] { unlink(dir + "/" + name) }
        rmdir(dir + "/sub")
        rmdir(dir)
    }

    /// A fake syscall that fails with the given errnos (in order), then returns `value`.
    private func scripted(_ failures: [Int32], then value: Int) -> (call: () -> Int, calls: () -> Int) {
        var left = failures[...]
        var count = 0
        let call = { () -> Int in
            count += 1
            if let e = left.popFirst() {
                errno = e
                return -1
            }
            return value
        }
        return (call, { count })
    }

    // MARK: The retry helpers

    func testRetryingRepeatsOnEINTRAndReturnsTheCount() throws {
        let s = scripted([EINTR, EINTR], then: 7)
        XCTAssertEqual(try Posix.retrying("fake", s.call), .processed(7))
        XCTAssertEqual(s.calls(), 3)
    }

    func testRetryingReturnsEAGAINAsAValueWithoutRetrying() throws {
        let s = scripted([EAGAIN], then: 7)
        XCTAssertEqual(try Posix.retrying("fake", s.call), .wouldBlock)
        XCTAssertEqual(s.calls(), 1)
    }

    func testRetryingThrowsOtherErrorsWithTheCallName() {
        let s = scripted([EINTR, ECONNRESET], then: 7)
        XCTAssertThrowsError(try Posix.retrying("fake(x)", s.call)) { error in
            XCTAssertEqual(error as? SyscallError, SyscallError("fake(x)", .connectionReset))
        }
        XCTAssertEqual(s.calls(), 2)
    }

    func testRetryingWithoutBadFDIsBugThrowsEBADF() {
        let s = scripted([EBADF], then: 0)
        XCTAssertThrowsError(try Posix.retrying("fake", badFDIsBug: false, s.call)) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .badFileDescriptor)
        }
    }

    func testRetryingInterruptsThrowsEAGAINAndReturnsValues() throws {
        let ok = scripted([EINTR], then: 42)
        XCTAssertEqual(try Posix.retryingInterrupts("fake", ok.call), 42)
        XCTAssertEqual(ok.calls(), 2)
        let again = scripted([EAGAIN], then: 42)
        XCTAssertThrowsError(try Posix.retryingInterrupts("fake", again.call)) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .wouldBlock)
        }
        XCTAssertEqual(again.calls(), 1)
    }

    // MARK: Files

    func testWriteThenReadContentsRoundTripsAndTruncates() throws {
        let path = dir + "/a"
        try Files.write(path, "a longer first text\n", mode: 0o600)
        try Files.write(path, "short\n")
        XCTAssertEqual(String(decoding: try Files.readContents(path, limit: 4096), as: UTF8.self), "short\n")
        // The mode applies when the file is created (an existing file keeps its own).
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600 & ~currentUmask())
    }

    func testReadContentsCutsOrRefusesALongerFile() throws {
        let path = dir + "/big"
        // Longer than one read chunk, so the limit is met across several reads.
        let text = String(repeating: "0123456789", count: 10_000)
        try Files.write(path, text)
        XCTAssertEqual(try Files.readContents(path, limit: 5), Array("01234".utf8))
        XCTAssertEqual(try Files.readContents(path, limit: 100_000).count, 100_000)
        XCTAssertEqual(try Files.readContents(path, limit: 100_000, longerIsError: true).count, 100_000)
        XCTAssertThrowsError(try Files.readContents(path, limit: 99_999, longerIsError: true)) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .fileTooLarge)
        }
        XCTAssertEqual(try Files.readContents(path, limit: 200_000).count, 100_000)
    }

    func testReadContentsOfProcFileAndErrors() throws {
        // /proc files report size 0: the read must go on to end of file.
        let stat = String(decoding: try Files.readContents("/proc/self/stat", limit: 4096), as: UTF8.self)
        XCTAssertTrue(stat.hasPrefix("\(getpid()) ("), stat)
        XCTAssertThrowsError(try Files.readContents(dir + "/missing", limit: 10)) { error in
            XCTAssertEqual(error as? SyscallError, SyscallError("open(\(dir)/missing)", .noSuchFile))
        }
        XCTAssertThrowsError(try Files.readContents(dir, limit: 10)) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .isADirectory)
        }
    }

    func testOpenedDescriptorsAreCloseOnExec() throws {
        let fd = try Files.openForReading("/proc/self/stat")
        defer { Posix.close(fd) }
        XCTAssertNotEqual(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0)
    }

    func testOpenForAppendingAppendsAndCreatesWithMode() throws {
        let path = dir + "/log"
        for line in ["one\n", "two\n"] {
            let fd = try Files.openForAppending(path, mode: 0o640)
            var text = line
            XCTAssertTrue(text.withUTF8 { Posix.writeAll(fd, UnsafeRawBufferPointer($0)) })
            Posix.close(fd)
        }
        XCTAssertEqual(String(decoding: try Files.readContents(path, limit: 100), as: UTF8.self), "one\ntwo\n")
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o640 & ~currentUmask())
    }

    private func currentUmask() -> mode_t {
        let m = umask(0)
        umask(m)
        return m
    }

    func testIsDirectoryRemoveAndCurrentDirectory() throws {
        XCTAssertEqual(mkdir(dir + "/sub", 0o700), 0)
        let d = try Files.openForReading(dir + "/sub")
        XCTAssertTrue(Files.isDirectory(d))
        Posix.close(d)
        try Files.write(dir + "/b", "x")
        let f = try Files.openForReading(dir + "/b")
        XCTAssertFalse(Files.isDirectory(f))
        Posix.close(f)
        Files.remove(dir + "/b")
        XCTAssertFalse(Posix.fileExists(dir + "/b"))
        Files.remove(dir + "/b")  // a missing file is no error
        var buf = [CChar](repeating: 0, count: 4096)
        XCTAssertNotNil(getcwd(&buf, buf.count))
        XCTAssertEqual(Files.currentDirectory(), String(cString: buf))
    }

    func testRedirectToDevNullReplacesTheDescriptor() throws {
        let (r, w) = try Posix.pipe()
        defer { Posix.close(r); Posix.close(w) }
        Files.redirectToDevNull(w)
        // w now writes to /dev/null and the pipe has no writer left: the read end sees end of file.
        var b: UInt8 = 1
        XCTAssertEqual(try Posix.write(w, &b, 1), .processed(1))
        XCTAssertEqual(try Posix.read(r, &b, 1), .processed(0))
    }

    func testConfigFileReadsAndReasonsThroughFiles() throws {
        let path = dir + "/a"
        try Files.write(path, "[pgbouncer]\n")
        XCTAssertEqual(try ConfigFile.readAll(path: path), "[pgbouncer]\n")
        XCTAssertNil(ConfigFile.unreadableReason(path: path))
        XCTAssertEqual(ConfigFile.unreadableReason(path: dir), "Is a directory")
        XCTAssertEqual(ConfigFile.unreadableReason(path: dir + "/missing"), "No such file or directory")
        XCTAssertThrowsError(try ConfigFile.readAll(path: dir + "/missing")) { error in
            XCTAssertEqual((error as? ConfigFileError)?.reason, "No such file or directory")
        }
        XCTAssertThrowsError(try ConfigFile.readAll(path: dir)) { error in
            XCTAssertEqual((error as? ConfigFileError)?.errno, EISDIR)
        }
        XCTAssertGreaterThan(Config.onlineCPUCount(), 0)
    }

    // MARK: Processes, poll, threads, sleep, addresses, sysconf

    func testProcessExists() throws {
        XCTAssertTrue(Posix.processExists(Posix.getpid()))
        XCTAssertTrue(Posix.processExists(1))  // alive, whether or not we may signal it
        XCTAssertFalse(Posix.processExists(0))
        XCTAssertFalse(Posix.processExists(-1))
        let pid = try Posix.spawn(path: "/bin/true", arguments: [], environment: [], fds: [])
        var status: Int32 = 0
        XCTAssertEqual(waitpid(pid, &status, 0), pid)
        XCTAssertFalse(Posix.processExists(pid))
    }

    func testPollReportsReadinessAndTimeout() throws {
        let (r, w) = try Posix.pipe()
        defer { Posix.close(r); Posix.close(w) }
        XCTAssertFalse(try Posix.poll(r, events: Int16(POLLIN), timeoutMillis: 10))
        XCTAssertTrue(try Posix.poll(w, events: Int16(POLLOUT), timeoutMillis: 0))
        var b: UInt8 = 7
        _ = try Posix.write(w, &b, 1)
        XCTAssertTrue(try Posix.poll(r, events: Int16(POLLIN), timeoutMillis: 5000))
    }

    func testStartDetachedRunsTheBody() throws {
        let (r, w) = try Posix.pipe()
        defer { Posix.close(r); Posix.close(w) }
        XCTAssertTrue(Threads.startDetached {
            var b: UInt8 = 42
            _ = try? Posix.write(w, &b, 1)
        })
        XCTAssertTrue(try Posix.poll(r, events: Int16(POLLIN), timeoutMillis: 10_000))
        var b: UInt8 = 0
        XCTAssertEqual(try Posix.read(r, &b, 1), .processed(1))
        XCTAssertEqual(b, 42)
    }

    func testClockSleepWaitsAtLeastTheDuration() {
        let start = Clock.monotonicNanos()
        Clock.sleep(nanos: 5_000_000)
        XCTAssertGreaterThanOrEqual(Clock.monotonicNanos() - start, 5_000_000)
    }

    func testLocalAddressOfAListener() throws {
        let any = try XCTUnwrap(SocketAddress.numeric(host: "127.0.0.1", port: 0))
        let fd = try Sockets.listenTCP(any, reusePort: false, backlog: 1)
        defer { Posix.close(fd) }
        let local = try XCTUnwrap(Sockets.localAddress(fd))
        XCTAssertEqual(local.hostString, "127.0.0.1")
        XCTAssertGreaterThan(local.port, 0)
        let (r, w) = try Posix.pipe()
        defer { Posix.close(r); Posix.close(w) }
        XCTAssertNil(Sockets.localAddress(r))
    }

    func testSysconfValues() {
        XCTAssertGreaterThan(Posix.onlineProcessors(), 0)
        XCTAssertEqual(Posix.pageSize(), Int(getpagesize()))
        XCTAssertGreaterThan(Posix.clockTicksPerSecond(), 0)
    }
}
