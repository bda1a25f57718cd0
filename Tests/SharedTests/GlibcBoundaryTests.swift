// The syscall boundary: outside Shared/System, Supervisor and Shared call no raw Glibc system call or libc
// I/O function. Files not converted yet are listed here; the list only shrinks.
import Foundation
import XCTest

final class GlibcBoundaryTests: XCTestCase {
    /// System calls and libc I/O, process and environment functions that belong behind Shared/System's
    /// wrappers. Pure memory helpers (memcpy, memcmp, malloc...) and C types or constants may be used anywhere.
    static let forbidden: Set<String> = [
        "open", "openat", "creat", "read", "pread", "readv", "write", "pwrite", "writev", "close",
        "stat", "fstat", "lstat", "access", "unlink", "rename", "mkdir", "rmdir", "getcwd", "chdir", "chmod",
        "chown", "umask", "readlink", "realpath", "lseek", "ftruncate", "truncate", "fsync", "fdatasync",
        "dup", "dup2", "dup3", "pipe", "pipe2", "fcntl", "ioctl", "mmap", "munmap", "memfd_create",
        "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "shutdown",
        "send", "sendto", "sendmsg", "recv", "recvfrom", "recvmsg", "getsockopt", "setsockopt",
        "getsockname", "getpeername", "getaddrinfo", "freeaddrinfo", "getnameinfo", "gai_strerror",
        "poll", "ppoll", "select", "epoll_create1", "epoll_ctl", "epoll_wait", "signalfd", "eventfd",
        "timerfd_create", "timerfd_settime",
        "fork", "vfork", "execv", "execve", "execvp", "posix_spawn", "waitpid", "kill", "raise",
        "exit", "_exit", "abort", "getpid", "getppid", "getuid", "geteuid", "setuid", "setgid", "prctl",
        "getenv", "setenv", "unsetenv", "putenv", "clearenv",
        "fopen", "fdopen", "fclose", "fread", "fwrite", "fgets", "fputs", "fprintf", "printf", "puts",
        "fflush", "perror", "opendir", "readdir", "closedir", "syslog", "openlog",
        "sysconf", "getrlimit", "setrlimit", "getrusage", "nanosleep", "usleep", "sleep",
        "clock_gettime", "gettimeofday", "pthread_create", "pthread_detach", "pthread_sigmask",
        "sigprocmask", "sigaction", "signal", "getpwuid_r", "getpwnam", "strerror", "errno",
    ]

    /// Folders scanned, and the one folder allowed to call Glibc.
    static let scanned = ["Sources/Supervisor", "Sources/Shared", "Sources/Worker"]
    static let boundary = "Sources/Shared/System/"

    /// Not converted yet (issue 16, part 5), file by file; each listed file must still have a hit: once
    /// converted, drop it from here. Empty: AdminExecutor, HealthCheck, SupervisorStats,
    /// MetricsExposition and Stats/StatsChunk, StatsCodec, WorkerStatsSnapshot (edited elsewhere during that
    /// change) call no Glibc function, so they stay under the rule; a few still `import Glibc` for nothing.
    static let notYetConverted: Set<String> = []
    /// Folders not converted yet: none (the worker was converted last).
    static let notYetConvertedFolders: [String] = []

    struct Hit: CustomStringConvertible {
        var file: String
        var line: Int
        var call: String
        var text: String
        var description: String { "\(file):\(line): \(call == "errno" ? call : call + "(")  — \(text.trimmingCharacters(in: .whitespaces))" }
    }

    static var repositoryRoot: URL {
        // Tests/SharedTests/GlibcBoundaryTests.swift -> the package root.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    func testNoRawGlibcCallsOutsideSharedSystem() throws {
        let root = Self.repositoryRoot
        var hits: [Hit] = []
        var scannedFiles = 0
        for folder in Self.scanned {
            let dir = root.appendingPathComponent(folder)
            guard let walker = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: nil) else {
                XCTFail("cannot list \(dir.path)")
                continue
            }
            for case let url as URL in walker where url.pathExtension == "swift" {
                let relative = String(url.path.dropFirst(root.path.count + 1))
                if relative.hasPrefix(Self.boundary) { continue }
                scannedFiles += 1
                let text = try String(contentsOf: url, encoding: .utf8)
                hits += Self.rawCalls(in: text).map { Hit(file: relative, line: $0.line, call: $0.call, text: $0.text) }
            }
        }
        XCTAssertGreaterThan(scannedFiles, 50, "the scan found too few files under \(root.path)")

        func allowed(_ file: String) -> Bool {
            Self.notYetConverted.contains(file) || Self.notYetConvertedFolders.contains { file.hasPrefix($0) }
        }
        let offending = hits.filter { !allowed($0.file) }
        XCTAssert(offending.isEmpty, """
            raw Glibc calls outside Sources/Shared/System (wrap them there: Posix, Files, Sockets, Clock, Threads...):
            \(offending.map { "  \($0)" }.joined(separator: "\n"))
            """)
        let stale = Self.notYetConverted.filter { file in !hits.contains { $0.file == file } }
        XCTAssert(stale.isEmpty, "no raw Glibc call left in \(stale.sorted()): remove it from GlibcBoundaryTests.notYetConverted")
        // What a later pass still has to convert (printed, so the log shows the boundary's debt).
        let remaining = hits.filter { allowed($0.file) }
        print("GlibcBoundaryTests: \(remaining.count) raw Glibc call sites left in not-yet-converted files:")
        for h in remaining { print("  \(h)") }
    }

    /// The scanner itself: what it must flag and what it must leave alone.
    func testScannerFlagsCallsAndSkipsLookalikes() {
        let source = #"""
            let fd = open(path, O_RDONLY)
            let n = Glibc.read(fd, p, 4)
            _ = close(fd)   // close(fd) in a comment is fine
            let r = try Posix.read(fd, p, 4)
            func write(_ x: Int) {}
            case kill(database: String?)
            close(victim, epoll: epoll)
            log.info("open(\(path)) failed: \(strerror(e))")
            let s = "read(" + "x"
            /* getenv("A") */ let ok = true
            x = a ? send(1) : 0
            let e = errno
            """#
        let found = Self.rawCalls(in: source).map { "\($0.line):\($0.call)" }
        XCTAssertEqual(found, ["1:open", "2:read", "3:close", "11:send", "12:errno"])
    }

    // MARK: The scanner

    /// Calls of `forbidden` names in Swift source: string literals and comments are skipped, as are
    /// member calls (`Posix.read(`, except `Glibc.read(`), declarations (`func read(`, `case kill(`),
    /// and calls with argument labels (Glibc functions have none: `close(fd, epoll: e)` is a Swift method).
    static func rawCalls(in text: String) -> [(line: Int, call: String, text: String)] {
        var out: [(Int, String, String)] = []
        var inBlockComment = false
        var inMultilineString = false
        // A file with its own `errno` (a local or a field) shadows Glibc's: its uses are not reads of errno.
        let declaresErrno = text.contains("let errno") || text.contains("var errno")
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.contains("\"\"\"") {
                // An opening or closing delimiter: the line belongs to the string literal.
                if line.components(separatedBy: "\"\"\"").count % 2 == 0 { inMultilineString.toggle() }
                continue
            }
            if inMultilineString { continue }
            let code = strip(Array(line.utf8), inBlockComment: &inBlockComment)
            for call in calls(in: code) where !(call == "errno" && declaresErrno) {
                out.append((index + 1, call, String(line)))
            }
        }
        return out
    }

    /// The line with string literals emptied and comments removed.
    static func strip(_ b: [UInt8], inBlockComment: inout Bool) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        func at(_ k: Int) -> UInt8 { k < b.count ? b[k] : 0 }
        while i < b.count {
            if inBlockComment {
                if b[i] == UInt8(ascii: "*") && at(i + 1) == UInt8(ascii: "/") { inBlockComment = false; i += 2 } else { i += 1 }
                continue
            }
            if b[i] == UInt8(ascii: "/") && at(i + 1) == UInt8(ascii: "/") { break }
            if b[i] == UInt8(ascii: "/") && at(i + 1) == UInt8(ascii: "*") { inBlockComment = true; i += 2; continue }
            if b[i] == UInt8(ascii: "\"") {
                i = skipString(b, from: i + 1)
                out += [UInt8(ascii: "\""), UInt8(ascii: "\"")]
                continue
            }
            out.append(b[i])
            i += 1
        }
        return out
    }

    /// The index after the string literal whose body starts at `from` (interpolations included).
    static func skipString(_ b: [UInt8], from: Int) -> Int {
        var i = from
        while i < b.count {
            if b[i] == UInt8(ascii: "\\") && i + 1 < b.count && b[i + 1] == UInt8(ascii: "(") {
                var depth = 1
                i += 2
                while i < b.count && depth > 0 {
                    if b[i] == UInt8(ascii: "\"") { i = skipString(b, from: i + 1); continue }
                    if b[i] == UInt8(ascii: "(") { depth += 1 }
                    if b[i] == UInt8(ascii: ")") { depth -= 1 }
                    i += 1
                }
                continue
            }
            if b[i] == UInt8(ascii: "\\") { i += 2; continue }
            if b[i] == UInt8(ascii: "\"") { return i + 1 }
            i += 1
        }
        return i
    }

    static func isIdent(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F
    }

    static func calls(in b: [UInt8]) -> [String] {
        var found: [String] = []
        var i = 0
        while i < b.count {
            guard isIdent(b[i]), i == 0 || !isIdent(b[i - 1]) else { i += 1; continue }
            var j = i
            while j < b.count && isIdent(b[j]) { j += 1 }
            let name = String(decoding: b[i..<j], as: UTF8.self)
            defer { i = j }
            guard forbidden.contains(name) else { continue }
            // A member (`x.read`) is a Swift method unless the qualifier is Glibc.
            var qualified = false
            if i > 0 && b[i - 1] == UInt8(ascii: ".") {
                var k = i - 1
                while k > 0 && isIdent(b[k - 1]) { k -= 1 }
                guard String(decoding: b[k..<(i - 1)], as: UTF8.self) == "Glibc" else { continue }
                qualified = true
            }
            // `errno` is read, not called; everything else must be a call.
            if name != "errno" && (j >= b.count || b[j] != UInt8(ascii: "(")) { continue }
            if name == "errno" && j < b.count && b[j] == UInt8(ascii: ":") { continue }  // a label or field name
            var p = i - 1
            while p >= 0 && b[p] == UInt8(ascii: " ") { p -= 1 }
            var q = p
            while q >= 0 && isIdent(b[q]) { q -= 1 }
            let before = q < p ? String(decoding: b[(q + 1)...p], as: UTF8.self) : ""
            if ["func", "case", "var", "let", "static"].contains(before) { continue }
            if name != "errno" && !qualified && hasLabel(b, open: j) { continue }
            found.append(name)
        }
        return found
    }

    /// Whether the argument list opening at `open` has a label (`name:` right after `(` or `,`).
    static func hasLabel(_ b: [UInt8], open: Int) -> Bool {
        var depth = 0
        var i = open
        var argStart = true
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "(") || c == UInt8(ascii: "[") { depth += 1; if depth == 1 { argStart = true }; i += 1; continue }
            if c == UInt8(ascii: ")") || c == UInt8(ascii: "]") { depth -= 1; if depth == 0 { return false }; i += 1; continue }
            if depth == 1 && c == UInt8(ascii: ",") { argStart = true; i += 1; continue }
            if depth == 1 && argStart {
                if c == UInt8(ascii: " ") { i += 1; continue }
                var j = i
                while j < b.count && isIdent(b[j]) { j += 1 }
                if j > i && j < b.count && b[j] == UInt8(ascii: ":") && (j + 1 >= b.count || b[j + 1] != UInt8(ascii: ":")) { return true }
                argStart = false
            }
            i += 1
        }
        return false
    }
}
