// Tests of the syscall layer against the real kernel: pipes, socket pairs, listeners, epoll, signalfd, spawn.
import Glibc
import XCTest
import Shared

final class SystemTests: XCTestCase {
    // MARK: Helpers

    private func readString(_ fd: Int32, timeoutMillis: Int32 = 2000) -> String {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while poll(&pfd, 1, timeoutMillis) > 0 {
            let r = buf.withUnsafeMutableBytes { try? Posix.read(fd, $0.baseAddress!, $0.count) }
            guard case .processed(let n)? = r, n > 0 else { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Waits for one specific child (waitpid, so children of other tests are left alone), up to 5 s.
    private func waitForChild(_ pid: Int32) -> ChildStatus? {
        var status: Int32 = 0
        for _ in 0..<500 {
            if waitpid(pid, &status, WNOHANG) == pid { return ChildStatus(raw: status) }
            usleep(10_000)
        }
        return nil
    }

    private func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) >= 0 }

    /// What a descriptor of this process refers to ("pipe:[…]", "socket:[…]", a path), for skip messages.
    private func describeDescriptor(_ fd: Int32) -> String {
        guard isOpen(fd) else { return "closed" }
        var buf = [CChar](repeating: 0, count: 512)
        let n = readlink("/proc/self/fd/\(fd)", &buf, buf.count - 1)
        return n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "open"
    }

    private func localPort(_ fd: Int32) -> Int {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        var a = SocketAddress()
        a.storage = storage
        a.length = len
        return a.port
    }

    private func acceptEither(_ fds: [Int32]) throws -> Int32? {
        var peer = SocketAddress()
        for _ in 0..<200 {
            for fd in fds {
                if let c = try Sockets.accept(fd, peer: &peer) { return c }
            }
            usleep(5_000)
        }
        return nil
    }

    // MARK: Pipes and socket pairs

    func testPipeReadWriteAndWouldBlock() throws {
        let (r, w) = try Posix.pipe()
        defer { Posix.close(r); Posix.close(w) }
        var buf = [UInt8](repeating: 0, count: 16)
        XCTAssertEqual(try buf.withUnsafeMutableBytes { try Posix.read(r, $0.baseAddress!, $0.count) }, .wouldBlock)
        let msg: [UInt8] = Array("hello".utf8)
        XCTAssertEqual(try msg.withUnsafeBytes { try Posix.write(w, $0.baseAddress!, $0.count) }, .processed(5))
        XCTAssertEqual(try buf.withUnsafeMutableBytes { try Posix.read(r, $0.baseAddress!, $0.count) }, .processed(5))
        XCTAssertEqual(Array(buf[0..<5]), msg)
        XCTAssertTrue(fcntl(r, F_GETFD) & FD_CLOEXEC != 0, "pipe ends are close-on-exec")
        XCTAssertTrue(fcntl(r, F_GETFL) & O_NONBLOCK != 0, "pipe ends are non-blocking")
    }

    func testPipeWriteReportsWouldBlockWhenFull() throws {
        let (r, w) = try Posix.pipe()
        defer { Posix.close(r); Posix.close(w) }
        let chunk = [UInt8](repeating: 7, count: 65_536)
        var total = 0
        var sawWouldBlock = false
        for _ in 0..<1000 {
            let res = try chunk.withUnsafeBytes { try Posix.write(w, $0.baseAddress!, $0.count) }
            if case .processed(let n) = res { total += n } else { sawWouldBlock = true; break }
        }
        XCTAssertTrue(sawWouldBlock)
        XCTAssertGreaterThan(total, 0)
    }

    func testEndOfFileAfterWriterCloses() throws {
        let (r, w) = try Posix.pipe()
        defer { Posix.close(r) }
        Posix.close(w)
        var buf = [UInt8](repeating: 0, count: 4)
        XCTAssertEqual(try buf.withUnsafeMutableBytes { try Posix.read(r, $0.baseAddress!, $0.count) }, .processed(0))
    }

    func testSendToClosedPeerThrowsBrokenPipeNotSIGPIPE() throws {
        let (a, b) = try Posix.socketPair(type: Int32(SOCK_STREAM.rawValue))
        defer { Posix.close(a) }
        Posix.close(b)
        let msg: [UInt8] = [1, 2, 3]
        XCTAssertThrowsError(try msg.withUnsafeBytes { try Posix.send(a, $0.baseAddress!, $0.count) }) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .brokenPipe)
        }
    }

    func testSocketPairPassesDescriptorWithSCMRights() throws {
        let (a, b) = try Posix.socketPair(type: Int32(SOCK_STREAM.rawValue))
        defer { Posix.close(a); Posix.close(b) }
        let (pr, pw) = try Posix.pipe()
        defer { Posix.close(pr) }
        let payload: [UInt8] = [0x42]
        let sent = try payload.withUnsafeBytes { try Posix.sendWithFDs(a, $0, fds: [pw]) }
        XCTAssertEqual(sent, .processed(1))
        Posix.close(pw)

        var fds: [Int32] = []
        var buf = [UInt8](repeating: 0, count: 8)
        let got = try buf.withUnsafeMutableBytes { try Posix.receiveWithFDs(b, $0.baseAddress!, $0.count, fds: &fds) }
        XCTAssertEqual(got, .processed(1))
        XCTAssertEqual(buf[0], 0x42)
        XCTAssertEqual(fds.count, 1)
        guard let passed = fds.first else { return }
        XCTAssertTrue(fcntl(passed, F_GETFD) & FD_CLOEXEC != 0, "received descriptors are close-on-exec")
        let text: [UInt8] = Array("via passed fd".utf8)
        _ = try text.withUnsafeBytes { try Posix.write(passed, $0.baseAddress!, $0.count) }
        Posix.close(passed)
        XCTAssertEqual(readString(pr), "via passed fd")
    }

    func testSeqpacketSocketPairKeepsMessageBoundaries() throws {
        let (a, b) = try Posix.socketPair()
        defer { Posix.close(a); Posix.close(b) }
        for m in ["one", "three"] {
            let bytes = Array(m.utf8)
            _ = try bytes.withUnsafeBytes { try Posix.send(a, $0.baseAddress!, $0.count) }
        }
        var buf = [UInt8](repeating: 0, count: 64)
        XCTAssertEqual(try buf.withUnsafeMutableBytes { try Posix.read(b, $0.baseAddress!, $0.count) }, .processed(3))
        XCTAssertEqual(try buf.withUnsafeMutableBytes { try Posix.read(b, $0.baseAddress!, $0.count) }, .processed(5))
        XCTAssertEqual(try buf.withUnsafeMutableBytes { try Posix.read(b, $0.baseAddress!, $0.count) }, .wouldBlock)
    }

    // MARK: Listeners

    func testReusePortListenersShareOnePortAndAccept() throws {
        let any = try XCTUnwrap(SocketAddress.numeric(host: "127.0.0.1", port: 0))
        let first = try Sockets.listenTCP(any, reusePort: true, backlog: 16)
        defer { Posix.close(first) }
        let port = localPort(first)
        XCTAssertGreaterThan(port, 0)
        let same = try XCTUnwrap(SocketAddress.numeric(host: "127.0.0.1", port: port))
        let second = try Sockets.listenTCP(same, reusePort: true, backlog: 16)
        defer { Posix.close(second) }
        XCTAssertEqual(localPort(second), port)

        // A listener without SO_REUSEPORT cannot join the group: that is how a second instance is detected.
        XCTAssertThrowsError(try Sockets.listenTCP(same, reusePort: false, backlog: 1)) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .addressInUse)
        }

        let (client, _) = try Sockets.connect(same)
        defer { Posix.close(client) }
        let server = try XCTUnwrap(try acceptEither([first, second]), "one of the listeners accepts the connection")
        defer { Posix.close(server) }
        XCTAssertNil(Sockets.pendingError(client))
        let msg: [UInt8] = Array("ping".utf8)
        _ = try msg.withUnsafeBytes { try Posix.send(client, $0.baseAddress!, $0.count) }
        XCTAssertEqual(readString(server, timeoutMillis: 200), "ping")
    }

    func testConnectToClosedPortReportsRefused() throws {
        let any = try XCTUnwrap(SocketAddress.numeric(host: "127.0.0.1", port: 0))
        let l = try Sockets.listenTCP(any, reusePort: false, backlog: 1)
        let port = localPort(l)
        Posix.close(l)
        let target = try XCTUnwrap(SocketAddress.numeric(host: "127.0.0.1", port: port))
        do {
            let (fd, _) = try Sockets.connect(target)
            defer { Posix.close(fd) }
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&pfd, 1, 2000)
            XCTAssertEqual(Sockets.pendingError(fd), .connectionRefused)
        } catch {
            XCTAssertEqual(error.errno, .connectionRefused)
        }
    }

    func testUnixListenerModeAcceptAndPeerUID() throws {
        let path = "/tmp/pgswift-systemtests-\(getpid()).sock"
        defer { unlink(path) }
        // A stale file is replaced.
        let stale = open(path, O_CREAT | O_WRONLY, 0o600)
        XCTAssertGreaterThanOrEqual(stale, 0)
        Posix.close(stale)
        let l = try Sockets.listenUnix(path: path, mode: 0o660, backlog: 8)
        defer { Posix.close(l) }
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o660)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFSOCK)

        let (client, _) = try Sockets.connect(try XCTUnwrap(SocketAddress.unix(path: path)))
        defer { Posix.close(client) }
        let server = try XCTUnwrap(try acceptEither([l]))
        defer { Posix.close(server) }
        XCTAssertEqual(Sockets.peerUID(server), getuid())
        XCTAssertNil(SocketAddress.unix(path: "/" + String(repeating: "x", count: 200)), "too long for sun_path")
    }

    func testSocketAddressParsingAndDescription() throws {
        let v4 = try XCTUnwrap(SocketAddress.numeric(host: "127.0.0.1", port: 6432))
        XCTAssertEqual(v4.family, AF_INET)
        XCTAssertEqual(v4.description, "127.0.0.1:6432")
        XCTAssertEqual(v4.hostString, "127.0.0.1")
        XCTAssertEqual(v4.port, 6432)
        let v6 = try XCTUnwrap(SocketAddress.numeric(host: "::1", port: 5432))
        XCTAssertEqual(v6.family, AF_INET6)
        XCTAssertEqual(v6.description, "[::1]:5432")
        XCTAssertEqual(v6.hostString, "::1")
        XCTAssertNil(SocketAddress.numeric(host: "localhost", port: 1))
        XCTAssertEqual(SocketAddress.unix(path: "/tmp/.s.PGSQL.6432")?.description, "unix:/tmp/.s.PGSQL.6432")
        let resolved = try SocketAddress.resolve(host: "127.0.0.1", port: 99)
        XCTAssertEqual(resolved.map(\.description), ["127.0.0.1:99"])
        XCTAssertThrowsError(try SocketAddress.resolve(host: "no-such-host.invalid", port: 1))
    }

    // MARK: epoll and signals

    func testEpollReportsReadableDescriptorWithItsData() throws {
        let ep = try Epoll(capacity: 8)
        let (r, w) = try Posix.pipe()
        defer { Posix.close(r); Posix.close(w) }
        try ep.add(r, events: .input, data: 0xABCD_0000_0001)
        XCTAssertEqual(try ep.wait(timeoutMillis: 0), 0)
        var b: UInt8 = 1
        _ = try Posix.write(w, &b, 1)
        XCTAssertEqual(try ep.wait(timeoutMillis: 1000), 1)
        let ev = ep.event(0)
        XCTAssertEqual(ev.data, 0xABCD_0000_0001)
        XCTAssertTrue(EpollEvents(rawValue: ev.events).contains(.input))
        try ep.modify(r, events: .output, data: 2)
        XCTAssertEqual(try ep.wait(timeoutMillis: 0), 0, "a pipe's read end never becomes writable")
        ep.remove(r)
    }

    func testSignalFDReceivesSelfSentSIGUSR1() throws {
        let sfd = try SignalFD(signals: [SIGUSR1])
        XCTAssertNil(sfd.next())
        // raise() targets this thread, where the signal is blocked, so it waits in the signalfd.
        XCTAssertEqual(raise(SIGUSR1), 0)
        let ep = try Epoll(capacity: 4)
        try ep.add(sfd.fd, events: .input, data: 7)
        XCTAssertEqual(try ep.wait(timeoutMillis: 1000), 1)
        XCTAssertEqual(sfd.next(), SIGUSR1)
        XCTAssertNil(sfd.next())
        XCTAssertEqual(Signals.name(SIGUSR1), "SIGUSR1")
        XCTAssertEqual(Signals.name(SIGTERM), "SIGTERM")
    }

    // MARK: Processes

    func testSpawnMapsDescriptorsFrom3AndHidesOthers() throws {
        let (r1, w1) = try Posix.pipe()
        let (r2, w2) = try Posix.pipe()
        defer { Posix.close(r1); Posix.close(r2) }
        // r2 is close-on-exec and not in the list: the child must not have it.
        let script = "echo \"one $1\" >&3; echo two >&4; if [ -e /proc/$$/fd/\(r2) ] && [ \(r2) -gt 4 ]; then echo leaked >&3; fi"
        let pid = try Posix.spawn(path: "/bin/sh", arguments: ["-c", script, "sh", "arg"],
                                  environment: ["PATH=/usr/bin:/bin"], fds: [w1, w2])
        Posix.close(w1)
        Posix.close(w2)
        XCTAssertGreaterThan(pid, 0)
        XCTAssertEqual(readString(r1), "one arg\n")
        XCTAssertEqual(readString(r2), "two\n")
        XCTAssertEqual(waitForChild(pid), .exited(0))
    }

    func testSpawnClosesDescriptorsTheParentInheritedWithoutCloseOnExec() throws {
        // A supervisor started from a shell or a test runner may hold descriptors without CLOEXEC
        // (CI's runner leaked fds 7-19); its workers must hold only 0-2 and their own list.
        let (r, w) = try Posix.pipe()
        defer { Posix.close(r) }
        let inherited = dup(w)  // dup() clears close-on-exec
        XCTAssertGreaterThan(inherited, 3)
        defer { Posix.close(inherited) }
        let script = "if [ -e /proc/$$/fd/\(inherited) ]; then echo leaked >&3; else echo closed >&3; fi"
        let pid = try Posix.spawn(path: "/bin/sh", arguments: ["-c", script], environment: ["PATH=/usr/bin:/bin"], fds: [w])
        Posix.close(w)
        Posix.close(inherited)
        XCTAssertEqual(readString(r), "closed\n")
        XCTAssertEqual(waitForChild(pid), .exited(0))
    }

    func testSpawnWithSourceDescriptorsInTheScratchRange() throws {
        // The spawn shim parks descriptors at 64.. before moving them to 3..; sources that already
        // live there must not be overwritten by an earlier one.
        guard !isOpen(64) && !isOpen(65) else {
            throw XCTSkip("fds 64/65 are in use: 64 \(describeDescriptor(64)), 65 \(describeDescriptor(65))")
        }
        let (ra, wa) = try Posix.pipe()
        let (rb, wb) = try Posix.pipe()
        defer { Posix.close(ra); Posix.close(rb) }
        XCTAssertEqual(dup2(wa, 65), 65)
        XCTAssertEqual(dup2(wb, 64), 64)
        Posix.close(wa)
        Posix.close(wb)
        var spawned: pid_t = -1
        do {
            spawned = try Posix.spawn(path: "/bin/sh", arguments: ["-c", "echo A >&3; echo B >&4"],
                                      environment: [], fds: [65, 64])
        } catch {
            // The test process is shared: a thread an earlier test left behind may close one of the two
            // descriptors under us (CI saw EBADF once). Then the arrangement failed, not the shim.
            if error.errno == .badFileDescriptor && !(isOpen(64) && isOpen(65)) {
                throw XCTSkip("fd 64 or 65 was closed by another thread before the spawn (\(error))")
            }
            throw error
        }
        let pid = spawned
        Posix.close(64)
        Posix.close(65)
        XCTAssertEqual(readString(ra), "A\n")
        XCTAssertEqual(readString(rb), "B\n")
        XCTAssertEqual(waitForChild(pid), .exited(0))
    }

    func testSpawnOfMissingBinaryThrows() {
        XCTAssertThrowsError(try Posix.spawn(path: "/nonexistent/pgswift-worker", arguments: [], environment: [], fds: [])) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .noSuchFile)
        }
    }

    func testChildStatusDecoding() throws {
        XCTAssertEqual(ChildStatus(raw: 7 << 8), .exited(7))
        XCTAssertEqual(ChildStatus(raw: 0), .exited(0))
        XCTAssertEqual(ChildStatus(raw: SIGKILL), .signaled(SIGKILL))
        XCTAssertEqual(ChildStatus(raw: SIGSEGV | 0x80), .signaled(SIGSEGV), "core dump flag")
        XCTAssertEqual(ChildStatus(raw: 0x137f), .other(0x137f), "stopped by SIGSTOP")
        XCTAssertEqual(ChildStatus.exited(3).description, "exited with status 3")
        XCTAssertEqual(ChildStatus.signaled(9).description, "killed by signal 9")

        let exiting = try Posix.spawn(path: "/bin/sh", arguments: ["-c", "exit 7"], environment: [], fds: [])
        XCTAssertEqual(waitForChild(exiting), .exited(7))
        let killed = try Posix.spawn(path: "/bin/sh", arguments: ["-c", "kill -9 $$"], environment: [], fds: [])
        XCTAssertEqual(waitForChild(killed), .signaled(SIGKILL))
    }

    func testReapChildReturnsExitedChildrenWithoutBlocking() throws {
        let sleeper = try Posix.spawn(path: "/bin/sh", arguments: ["-c", "sleep 5"], environment: [], fds: [])
        let quick = try Posix.spawn(path: "/bin/sh", arguments: ["-c", "exit 3"], environment: [], fds: [])
        var reaped: (pid: Int32, status: ChildStatus)?
        for _ in 0..<500 where reaped == nil {
            if let r = Posix.reapChild(), r.pid == quick { reaped = r } else { usleep(10_000) }
        }
        XCTAssertEqual(reaped?.status, .exited(3))
        let t0 = Clock.monotonicNanos()
        XCTAssertNil(Posix.reapChild(), "the sleeper still runs: WNOHANG, nothing to reap")
        XCTAssertLessThan(Clock.monotonicNanos() - t0, 1_000_000_000)
        try Posix.kill(sleeper, SIGKILL)
        XCTAssertEqual(waitForChild(sleeper), .signaled(SIGKILL))
    }

    func testKillOfMissingProcessReportsNoSuchProcess() throws {
        let pid = try Posix.spawn(path: "/bin/sh", arguments: ["-c", "exit 0"], environment: [], fds: [])
        XCTAssertEqual(waitForChild(pid), .exited(0))
        XCTAssertThrowsError(try Posix.kill(pid, 0)) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .noSuchProcess)
        }
        XCTAssertNoThrow(try Posix.kill(getpid(), 0))
    }

    // MARK: Errors and process facts

    func testErrnoAndSyscallErrorDescriptions() {
        XCTAssertEqual(Errno.noSuchFile.description, "No such file or directory")
        XCTAssertEqual(Errno.addressInUse.rawValue, EADDRINUSE)
        XCTAssertEqual(SyscallError("bind(127.0.0.1:6432)", .addressInUse).description,
                       "bind(127.0.0.1:6432): Address already in use")
        XCTAssertEqual(Errno(rawValue: 0x7fff).description.isEmpty, false)
        _ = open("/nonexistent/x", O_RDONLY)
        XCTAssertEqual(Errno.current, .noSuchFile)
    }

    func testProcessFacts() throws {
        let exe = try XCTUnwrap(Posix.executablePath())
        XCTAssertTrue(exe.hasPrefix("/"))
        XCTAssertTrue(Posix.isExecutable(exe))
        XCTAssertTrue(Posix.fileExists("/bin/sh"))
        XCTAssertFalse(Posix.fileExists("/nonexistent"))
        XCTAssertEqual(Posix.getpid(), getpid())
        setenv("PGSWIFT_SYSTEMTESTS", "x=y", 1)
        XCTAssertEqual(Posix.getenv("PGSWIFT_SYSTEMTESTS"), "x=y")
        XCTAssertTrue(Posix.environment().contains("PGSWIFT_SYSTEMTESTS=x=y"))
        XCTAssertGreaterThanOrEqual(Posix.raiseOpenFilesLimit(), 1024)
        let d = try Posix.dup(0)
        XCTAssertGreaterThanOrEqual(d, 3)
        Posix.close(d)
    }

    func testClockIsMonotonicAndTimestampIsWellFormed() {
        let a = Clock.monotonicNanos()
        let b = Clock.monotonicNanos()
        XCTAssertGreaterThanOrEqual(b, a)
        XCTAssertEqual(Clock.timestamp(seconds: 0), "1970-01-01 00:00:00 UTC")
        XCTAssertEqual(Clock.timestamp(seconds: 86_400 + 3_661, millis: 5), "1970-01-02 01:01:01.005 UTC")
        XCTAssertEqual(Clock.nanos(seconds: 0.1), 100_000_000)
    }

    func testLoggerWritesLineToLogFileAndFiltersLevels() throws {
        let path = "/tmp/pgswift-systemtests-\(getpid()).log"
        defer { unlink(path) }
        var log = Logger(who: "test", minimumLevel: .warning)
        XCTAssertTrue(log.openLogFile(path))
        defer { Posix.close(log.fileFD) }
        log.info("not written")
        log.warning("written")
        let fd = open(path, O_RDONLY)
        defer { Posix.close(fd) }
        let text = readString(fd, timeoutMillis: 0)
        XCTAssertFalse(text.contains("not written"))
        XCTAssertTrue(text.hasSuffix("[\(getpid())] test WARNING written\n"), text)
        XCTAssertFalse(log.enabled(.log))
        XCTAssertTrue(log.enabled(.error))
    }

    // MARK: Syslog

    /// The facility codes are libc's LOG_* values, and the levels map to PgBouncer's priorities
    /// (debug is not sent). What reaches the syslog socket: EndToEndTests/SyslogTests.swift.
    func testSyslogFacilityCodesAndPriorities() {
        XCTAssertEqual(SyslogFacility.auth.code, LOG_AUTH)
        XCTAssertEqual(SyslogFacility.authpriv.code, LOG_AUTHPRIV)
        XCTAssertEqual(SyslogFacility.daemon.code, LOG_DAEMON)
        XCTAssertEqual(SyslogFacility.user.code, LOG_USER)
        XCTAssertEqual(SyslogFacility.local0.code, LOG_LOCAL0)
        XCTAssertEqual(SyslogFacility.local7.code, LOG_LOCAL7)
        XCTAssertEqual(Syslog.severity(.fatal), LOG_CRIT)
        XCTAssertEqual(Syslog.severity(.error), LOG_ERR)
        XCTAssertEqual(Syslog.severity(.warning), LOG_WARNING)
        XCTAssertEqual(Syslog.severity(.log), LOG_INFO)
        XCTAssertNil(Syslog.severity(.debug))
        XCTAssertFalse(Syslog.isOn)
    }
}

