// Replaying one input on one connection, printing what pgswift answers, then checking the pool still serves.
#if canImport(Glibc)
import Glibc
#endif
import FuzzCore

struct Replay {
    let o: RunOptions

    init(_ o: RunOptions) { self.o = o }

    /// A blocking-style exchange over poll: returns false when the fd saw no progress before `until`.
    private func waitReadable(_ fd: Int32, until: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ms = Int32(max(0, (until - Net.now()) * 1000))
        return poll(&p, 1, ms) > 0
    }

    private func sendAll(_ fd: Int32, _ bytes: [UInt8], until: Double) -> Bool {
        var pos = 0
        while pos < bytes.count {
            let r = bytes.withUnsafeBytes { Net.send(fd, UnsafeRawBufferPointer(rebasing: $0[pos...])) }
            switch r {
            case .done(let n): pos += n
            case .wouldBlock:
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&p, 1, Int32(max(0, (until - Net.now()) * 1000))) <= 0 { return false }
            case .closed(let e):
                print("  pgswift closed the connection after \(pos) of \(bytes.count) bytes (\(Net.errorText(e)))")
                return false
            }
        }
        return true
    }

    /// Reads messages until `stop` says so, end of file (nil) or the deadline (false).
    private func read(_ fd: Int32, until: Double, verbose: Bool,
                      stop: (UInt8, [UInt8]) -> Bool) -> Bool? {
        var sc = BackendScanner(keep: Set("DEZRNSKCTVnst123AIG".utf8))
        sc.keepLimit = 200
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 8)
        defer { buf.deallocate() }
        var raw = true  // a pre-auth answer may start with a one-byte 'N'/'S' (SSL/GSS refusal)
        while true {
            if Net.now() > until { return false }
            guard waitReadable(fd, until: until) else { return false }
            switch Net.recv(fd, buf) {
            case .wouldBlock: continue
            case .closed, .done(0): return nil
            case .done(let n):
                var p = UnsafeRawBufferPointer(rebasing: buf[0..<n])
                if raw && o.phase == .preAuth && (p[0] == UInt8(ascii: "N") || p[0] == UInt8(ascii: "S")) && (n == 1 || p[1] != 0) {
                    if verbose { print("  <- \(Character(UnicodeScalar(p[0]))) (one-byte answer)") }
                    p = UnsafeRawBufferPointer(rebasing: p[1...])
                }
                raw = false
                var done = false
                sc.feed(p) { e in
                    switch e {
                    case .garbled(let t, let l):
                        print("  <- GARBLED: type byte \(t), length \(l): pgswift's output is no longer framed")
                        done = true
                    case .message(let t, let body):
                        if verbose {
                            var line = "  <- \(Character(UnicodeScalar(t))) \(body.count) bytes"
                            if t == UInt8(ascii: "E") || t == UInt8(ascii: "N") {
                                let fields = body.split(separator: 0).map { String(decoding: $0.dropFirst(), as: UTF8.self) }
                                line += ": " + fields.joined(separator: " | ")
                            }
                            print(line)
                        }
                        if stop(t, body) { done = true }
                    }
                }
                if done { return true }
            }
        }
    }

    private func connect() -> Int32? {
        for _ in 0..<100 {
            switch Net.connectUnix(o.socketPath) {
            case .connected(let fd): return fd
            case .busy: usleep(10_000)
            case .failed(let e):
                print("connect \(o.socketPath): \(Net.errorText(e))")
                return nil
            }
        }
        return nil
    }

    private func login(verbose: Bool) -> Int32? {
        guard let fd = connect() else { return nil }
        let until = Net.now() + 5
        guard sendAll(fd, Enc.serialize([Enc.startup([("user", o.names.trustUser), ("database", o.names.database)])]), until: until),
              read(fd, until: until, verbose: false, stop: { t, _ in t == UInt8(ascii: "Z") || t == UInt8(ascii: "E") }) == true
        else {
            print("  login as \(o.names.trustUser) failed or took over 5 s")
            close(fd)
            return nil
        }
        return fd
    }

    /// Sends `bytes` `times` times (each on a fresh connection), then checks a normal query.
    func run(_ bytes: [UInt8], halfClose: Bool, times: Int) -> Bool {
        var ok = true
        for n in 0..<times {
            let verbose = n == 0
            guard let fd = o.phase == .preAuth ? connect() : login(verbose: verbose) else { return false }
            var payload = bytes
            if !halfClose {
                Enc.copyFail("pgswift-fuzz").append(to: &payload)
                Enc.sync.append(to: &payload)
                Enc.query("ROLLBACK; SELECT 424242").append(to: &payload)
            }
            let started = Net.now()
            let until = started + 5
            if verbose { print("-> \(payload.count) bytes\(halfClose ? ", then half-close" : " + CopyFail + Sync + canary")") }
            _ = sendAll(fd, payload, until: until)
            if halfClose { shutdown(fd, Int32(SHUT_WR)) }
            var sawMarker = false
            let r = read(fd, until: until, verbose: verbose) { t, body in
                if t == UInt8(ascii: "D") && body.count > 6 && Array(body[6...]) == Array("424242".utf8) { sawMarker = true }
                return !halfClose && sawMarker && t == UInt8(ascii: "Z")
            }
            let took = Net.now() - started
            switch r {
            case nil:
                if verbose { print("outcome: pgswift closed the connection after \(format1(took)) s") }
            case true?:
                if verbose { print("outcome: answered (canary seen) in \(format1(took)) s") }
            case false?:
                print("outcome: NO ANSWER AND NO CLOSE within 5 s (run \(n + 1) of \(times)); stopping the repeats")
                ok = false
            }
            close(fd)
            if !ok { break }
        }
        if o.phase == .postAuth {
            let started = Net.now()
            if let fd = login(verbose: false) {
                _ = sendAll(fd, Enc.serialize([Enc.query("select 1")]), until: started + 5)
                let r = read(fd, until: started + 5, verbose: false) { t, _ in t == UInt8(ascii: "Z") }
                close(fd)
                if r == true {
                    print("check: a normal client was answered in \(format1(Net.now() - started)) s")
                } else {
                    print("check: POOL FROZEN: a normal client got no answer within 5 s")
                    ok = false
                }
            } else {
                print("check: POOL FROZEN: a normal client could not log in within 5 s")
                ok = false
            }
        }
        print(ok ? "verdict: ok" : "verdict: FAILED")
        return ok
    }
}
