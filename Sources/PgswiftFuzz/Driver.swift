// The fuzzing loop: many non-blocking connections under one poll(), each running one input at a time.
#if canImport(Glibc)
import Glibc
#endif
import FuzzCore

struct RunOptions {
    var phase: FuzzPhase = .postAuth
    var seed: UInt64 = 1
    var inputs: UInt64 = 1_000_000
    var seconds: Double = 300
    var conns = 48
    var socketPath = ""
    var names = FuzzNames()
    var outDir = "fuzz/out"
    /// Seconds an input may take (answer, close) before it counts as a timeout.
    var timeout: Double = 5
    var framingPercent: Int?
    var progressEvery: Double = 10
}

/// What a run counted; printed as one `RESULT key=value ...` line.
struct Counters {
    var run: UInt64 = 0          // fully sent, outcome observed
    var answered: UInt64 = 0     // post: canary answered (connection kept)
    var errors: UInt64 = 0       // post: answered and at least one ErrorResponse on the way
    var closed: UInt64 = 0       // pgswift closed the connection (FATAL or hang-up handled)
    var cutShort: UInt64 = 0     // pgswift closed before the input was fully sent (not counted in run)
    var timeouts: UInt64 = 0     // no outcome within the timeout (a finding)
    var garbled: UInt64 = 0      // pgswift's output stopped being framed (a finding)
    var crossed: UInt64 = 0      // post: another input's canary row reached this session (a finding)
    var framing: UInt64 = 0      // inputs that broke framing (run)
    var logins: UInt64 = 0
    var loginFailures: UInt64 = 0
    var connectBusy: UInt64 = 0
    var connectFailures: UInt64 = 0
    var serverDown: UInt64 = 0   // closed because PostgreSQL was down or restarting (not counted in run)
    var lateCloses: UInt64 = 0   // closed by pgswift, but only after the slot had moved on
}

final class Slot {
    enum State { case down, loggingIn, ready, sending, awaiting, halfClosed }
    var fd: Int32 = -1
    var state = State.down
    var out: [UInt8] = []
    var outPos = 0
    var scanner = BackendScanner(keep: Set("DEZGHW".utf8))
    /// Types of the last few kept messages of the current input, for a timeout's report.
    var recent: [UInt8] = []
    var index: UInt64 = 0
    /// Inputs run earlier on this connection (latest last, at most 4), for a finding's report: a
    /// session carries state (statements, parameters) from one input to the next.
    var earlier: [UInt64] = []
    var input: FuzzInput?
    var deadline = 0.0
    var marker: [UInt8] = []
    var sawMarker = false
    var sawError = false
    var retryAt = 0.0
    /// The last ErrorResponse's SQLSTATE and message, for the tally of why connections closed.
    var lastError = ""
}

/// A half-closed connection waiting for pgswift to close it, no longer holding a slot.
struct Lingering {
    var fd: Int32
    var index: UInt64
    var input: FuzzInput
    var deadline: Double
}

final class Driver {
    let o: RunOptions
    let mutator: Mutator
    var c = Counters()
    var next: UInt64 = 0
    var slots: [Slot] = []
    var saved: [String: Int] = [:]
    var stopping = false
    var lastConnectOK = Net.now()
    var fatal: String?
    var lingering: [Lingering] = []
    /// How many more inputs may be handed out now (inputs wanted - run - in flight).
    var allowance = 0
    var closeReasons: [String: Int] = [:]
    /// Seconds a half-closed connection keeps its slot before it waits aside (`lingering`).
    let lingerAfter = 0.2
    let readBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: 262_144, alignment: 8)

    init(_ o: RunOptions) {
        self.o = o
        mutator = Mutator(phase: o.phase, names: o.names, framingPercent: o.framingPercent)
        slots = (0..<o.conns).map { _ in Slot() }
    }

    // MARK: findings

    func finding(_ kind: String, _ s: Slot, _ detail: String) {
        guard let input = s.input else { return }
        let n = saved[kind, default: 0]
        saved[kind] = n + 1
        let base = "\(kind)-\(o.phase.name)-s\(o.seed)-i\(s.index)"
        if n < 20 { Net.writeFile("\(o.outDir)/\(base).bin", input.bytes) }
        Net.appendLine("\(o.outDir)/findings.txt",
                       "\(kind) phase=\(o.phase.name) seed=\(o.seed) index=\(s.index) bytes=\(input.bytes.count) "
                       + "framing=\(input.breaksFraming) steps=\(input.steps.joined(separator: ","))"
                       + (s.earlier.isEmpty ? "" : " earlier=\(s.earlier.map { String($0) }.joined(separator: ","))") + " \(detail)"
                       + (n < 20 ? " file=\(base).bin" : ""))
        if n < 5 && !kind.hasPrefix("info-") {
            Net.eprint("finding: \(kind) seed=\(o.seed) index=\(s.index) \(detail) (replay: pgswift-fuzz replay --phase \(o.phase.name) --seed \(o.seed) --index \(s.index) --socket PATH)")
        }
    }

    // MARK: connection life

    func drop(_ s: Slot, retryAfter: Double = 0) {
        if s.fd >= 0 { close(s.fd) }
        s.fd = -1
        s.state = .down
        s.input = nil
        s.out.removeAll(keepingCapacity: true)
        s.outPos = 0
        s.retryAt = Net.now() + retryAfter
    }

    func open(_ s: Slot, now: Double) {
        switch Net.connectUnix(o.socketPath) {
        case .connected(let fd):
            s.fd = fd
            s.earlier.removeAll(keepingCapacity: true)
            lastConnectOK = now
            s.scanner.reset()
            if o.phase == .preAuth {
                startInput(s, now: now)
            } else {
                c.logins += 1
                s.state = .loggingIn
                s.deadline = now + o.timeout
                s.out = Enc.serialize([Enc.startup([("user", o.names.trustUser), ("database", o.names.database)])])
                s.outPos = 0
                flush(s, now: now)
            }
        case .busy:
            c.connectBusy += 1
            s.retryAt = now + 0.002
        case .failed(let e):
            c.connectFailures += 1
            s.retryAt = now + 0.05
            if now - lastConnectOK > 10 {
                fatal = "cannot connect to \(o.socketPath) for 10 s: \(Net.errorText(e))"
            }
        }
    }

    func startInput(_ s: Slot, now: Double) {
        guard allowance > 0, !stopping else {
            drop(s)
            return
        }
        let index = next
        next += 1
        allowance -= 1
        let input = mutator.input(seed: o.seed, index: index)
        s.index = index
        s.input = input
        s.out.removeAll(keepingCapacity: true)
        s.out += input.bytes
        s.outPos = 0
        s.sawMarker = false
        s.sawError = false
        s.lastError = ""
        s.recent.removeAll(keepingCapacity: true)
        if o.phase == .postAuth && !input.breaksFraming {
            // CopyFail ends a COPY FROM STDIN the input left open (PostgreSQL ignores it otherwise),
            // Sync whatever extended-protocol exchange it left open; the canary query ends any
            // transaction it opened and carries a marker no input produces.
            let value = 1_000_000_000_000 + index
            let digits = Array(String(value).utf8)
            s.marker = Enc.int16(1) + Enc.int32(digits.count) + digits
            Enc.copyFail("pgswift-fuzz").append(to: &s.out)
            Enc.sync.append(to: &s.out)
            Enc.query("ROLLBACK; SELECT \(value)").append(to: &s.out)
        }
        s.state = .sending
        s.deadline = now + o.timeout
        flush(s, now: now)
    }

    /// Writes what is pending; once everything is out, half-closes (pre-auth and framing-breaking
    /// inputs) or waits for the canary.
    func flush(_ s: Slot, now: Double) {
        while s.outPos < s.out.count {
            let r = s.out.withUnsafeBytes { Net.send(s.fd, UnsafeRawBufferPointer(rebasing: $0[s.outPos...])) }
            switch r {
            case .done(let n): s.outPos += n
            case .wouldBlock: return
            case .closed:
                if s.state == .sending { c.cutShort += 1 }
                if s.state == .loggingIn { c.loginFailures += 1 }
                drop(s)
                return
            }
        }
        guard s.state == .sending, let input = s.input else { return }
        if o.phase == .preAuth || input.breaksFraming {
            shutdown(s.fd, Int32(SHUT_WR))
            s.state = .halfClosed
        } else {
            s.state = .awaiting
        }
    }

    func readable(_ s: Slot, now: Double) {
        while s.fd >= 0 {
            switch Net.recv(s.fd, readBuf) {
            case .wouldBlock:
                return
            case .closed, .done(0):
                peerClosed(s)
                return
            case .done(let n):
                if o.phase == .preAuth { continue }
                var events: [BackendScanner.Event] = []
                s.scanner.feed(UnsafeRawBufferPointer(rebasing: readBuf[0..<n])) { events.append($0) }
                for e in events where s.fd >= 0 { handle(e, s, now: now) }
            }
        }
    }

    func peerClosed(_ s: Slot) {
        switch s.state {
        case .halfClosed where Driver.serverDown(s.lastError), .awaiting where Driver.serverDown(s.lastError):
            // PostgreSQL was restarting or unreachable: the input tested nothing; it does not count.
            c.serverDown += 1
        case .halfClosed, .awaiting:
            c.run += 1
            c.closed += 1
            closeReasons[s.lastError.isEmpty ? "(no error)" : s.lastError, default: 0] += 1
            if s.lastError.hasPrefix("08006") && saved["info-serverclosed", default: 0] < 20 {
                // Not a bug by itself (PostgreSQL closed the session): kept to see what costs backends.
                finding("info-serverclosed", s, s.lastError)
            }
            if s.input?.breaksFraming == true { c.framing += 1 }
        case .sending:
            c.cutShort += 1
        case .loggingIn:
            c.loginFailures += 1
            drop(s, retryAfter: 0.1)
            return
        default:
            break
        }
        drop(s)
    }

    func handle(_ e: BackendScanner.Event, _ s: Slot, now: Double) {
        switch e {
        case .garbled(let type, let length):
            if s.state == .awaiting || s.state == .halfClosed || s.state == .sending {
                c.garbled += 1
                c.run += 1
                finding("garbled", s, "type=\(type) length=\(length)")
            }
            drop(s)
        case .message(let type, let body):
            if s.recent.count >= 12 { s.recent.removeFirst() }
            s.recent.append(type)
            switch type {
            case UInt8(ascii: "Z"):
                if s.state == .loggingIn {
                    s.state = .ready
                } else if s.state == .awaiting && s.sawMarker {
                    c.run += 1
                    c.answered += 1
                    if s.sawError { c.errors += 1 }
                    if s.earlier.count >= 4 { s.earlier.removeFirst() }
                    s.earlier.append(s.index)
                    s.input = nil
                    s.state = .ready
                }
            case UInt8(ascii: "E"):
                if s.state == .loggingIn {
                    c.loginFailures += 1
                    drop(s, retryAfter: 0.1)
                } else {
                    s.sawError = true
                    s.lastError = Driver.errorSummary(body)
                }
            case UInt8(ascii: "D"):
                if body == s.marker {
                    s.sawMarker = true
                } else if let other = Driver.markerIndex(body), other != s.index {
                    // An answer owed to another input (of this session, already finished, or of
                    // another session): pgswift delivered a reply to the wrong client or twice.
                    c.crossed += 1
                    finding("crossed", s, "got the canary row of input \(other), last answers "
                            + String(decoding: s.recent, as: UTF8.self))
                }
            default:
                break
            }
        }
    }

    /// The input index a canary row (`SELECT 1000000000000 + index`: one column, 13 digits) carries.
    static func markerIndex(_ body: [UInt8]) -> UInt64? {
        guard body.count == 19, body[0] == 0, body[1] == 1, body[2] == 0, body[3] == 0, body[4] == 0, body[5] == 13,
              let v = UInt64(String(decoding: body[6...], as: UTF8.self)), v >= 1_000_000_000_000 else { return nil }
        return v - 1_000_000_000_000
    }

    static func serverDown(_ error: String) -> Bool { error.hasPrefix("57P") || error.hasPrefix("08001") }

    static func errorSummary(_ body: [UInt8]) -> String {
        var code = "", msg = ""
        for f in body.split(separator: 0) where !f.isEmpty {
            let v = String(decoding: f.dropFirst(), as: UTF8.self)
            if f.first == UInt8(ascii: "C") { code = v }
            if f.first == UInt8(ascii: "M") { msg = String(v.prefix(60)) }
        }
        return code + " " + msg
    }

    /// Moves a slow half-closed connection aside so its slot runs the next input.
    func linger(_ s: Slot) {
        guard let input = s.input else { return drop(s) }
        lingering.append(Lingering(fd: s.fd, index: s.index, input: input, deadline: s.deadline))
        s.fd = -1
        drop(s)
    }

    /// Polls the lingering connections (without waiting): end of file counts the input as run;
    /// past the deadline it is a finding.
    func checkLingering(now: Double) {
        guard !lingering.isEmpty else { return }
        var fds = lingering.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        _ = poll(&fds, nfds_t(fds.count), 0)
        var keep: [Lingering] = []
        for (k, l) in lingering.enumerated() {
            var closed = false
            if fds[k].revents != 0 {
                loop: while true {
                    switch Net.recv(l.fd, readBuf) {
                    case .done(0), .closed: closed = true; break loop
                    case .done: continue
                    case .wouldBlock: break loop
                    }
                }
            }
            if closed {
                c.run += 1
                c.closed += 1
                c.lateCloses += 1
                if l.input.breaksFraming { c.framing += 1 }
                close(l.fd)
            } else if now > l.deadline {
                c.timeouts += 1
                let s = Slot()
                s.index = l.index
                s.input = l.input
                finding("notclosed", s, "half-closed, not closed by pgswift within \(o.timeout) s")
                close(l.fd)
            } else {
                keep.append(l)
            }
        }
        lingering = keep
    }

    // MARK: the loop

    func run() -> Counters {
        Net.makeDir(o.outDir)
        let start = Net.now()
        var lastProgress = start
        var lastRun: UInt64 = 0
        var fds = [pollfd](repeating: pollfd(), count: slots.count)
        var map = [Int](repeating: 0, count: slots.count)
        while fatal == nil {
            let now = Net.now()
            if !stopping && (c.run >= o.inputs || now - start >= o.seconds) { stopping = true }
            // Every input handed out and finished one way or another (some end as timeouts or cut short).
            // Inputs that end as timeouts or cut short do not count: hand out more until `inputs` have run.
            let inFlight = slots.reduce(0) { $0 + ($1.input != nil ? 1 : 0) } + lingering.count
            allowance = Int(o.inputs) - Int(c.run) - inFlight
            if stopping { break }
            if now - lastProgress >= o.progressEvery {
                let rate = Double(c.run - lastRun) / (now - lastProgress)
                Net.eprint("\(o.phase.name): \(c.run) inputs in \(Int(now - start)) s (\(Int(rate))/s now), closed \(c.closed), "
                           + "timeouts \(c.timeouts), garbled \(c.garbled), logins \(c.logins)")
                lastProgress = now
                lastRun = c.run
            }
            var n = 0
            for (i, s) in slots.enumerated() {
                if s.state == .down {
                    if now >= s.retryAt && allowance > 0 { open(s, now: now) }
                } else if s.state == .ready {
                    startInput(s, now: now)
                }
                if s.state == .halfClosed && now > s.deadline - o.timeout + lingerAfter && now <= s.deadline {
                    linger(s)
                }
                if s.fd >= 0 && s.state != .ready && s.state != .down && now > s.deadline {
                    if s.state == .loggingIn {
                        c.loginFailures += 1
                    } else {
                        c.timeouts += 1
                        finding(s.state == .halfClosed ? "notclosed" : "timeout", s,
                                "state=\(s.state) after \(o.timeout) s, last answers "
                                + String(decoding: s.recent, as: UTF8.self) + " " + s.lastError)
                    }
                    drop(s)
                }
                guard s.fd >= 0 else { continue }
                fds[n].fd = s.fd
                fds[n].events = Int16(POLLIN) | (s.outPos < s.out.count ? Int16(POLLOUT) : 0)
                fds[n].revents = 0
                map[n] = i
                n += 1
            }
            checkLingering(now: now)
            let rc = poll(&fds, nfds_t(n), 20)
            if rc <= 0 { continue }
            let t = Net.now()
            for k in 0..<n where fds[k].revents != 0 {
                let s = slots[map[k]]
                guard s.fd == fds[k].fd else { continue }
                if fds[k].revents & Int16(POLLOUT) != 0 { flush(s, now: t) }
                if s.fd >= 0 && fds[k].revents & (Int16(POLLIN) | Int16(POLLHUP) | Int16(POLLERR)) != 0 { readable(s, now: t) }
            }
        }
        // Lingering connections get their full timeout: pgswift must close them.
        while !lingering.isEmpty {
            checkLingering(now: Net.now())
            if !lingering.isEmpty { usleep(20_000) }
        }
        for s in slots where s.fd >= 0 { drop(s) }
        let top = closeReasons.sorted { $0.value > $1.value }.prefix(12)
        if !top.isEmpty {
            Net.eprint("\(o.phase.name): why connections closed (last error seen): "
                       + top.map { "\($0.value)× \($0.key)" }.joined(separator: "; "))
        }
        return c
    }
}
