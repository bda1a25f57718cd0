// `pgswift top`: a live view of a running pgswift (pools, the busiest query patterns of the last
// second) read from its admin console over the PostgreSQL protocol; plain ANSI escapes, q quits.
import Shared

struct TopOptions: Equatable, Sendable {
    var host: String? = nil
    var port: Int? = nil
    var user: String? = nil
    var database = "pgbouncer"
    /// Seconds between refreshes.
    var delay = 1.0
    /// Refreshes before exiting (0: until q).
    var iterations = 0
    /// -b: plain frames one after the other on stdout, no terminal control (for logs and scripts).
    var batch = false
    /// --help: print the usage.
    var help = false
}

enum TopCLI {
    static let usage = """
        usage: pgswift top [-h HOST] [-p PORT] [-U USER] [-d DATABASE] [-s SECONDS] [-n COUNT] [-b]

        A live view of a running pgswift, read from its admin console like psql connects to it:
          -h HOST       host name, address, or Unix socket directory (PGHOST; default /tmp)
          -p PORT       port (PGPORT; default 6432)
          -U USER       an admin_users/stats_users user (PGUSER; default the login name)
          -d DATABASE   the console's name (default pgbouncer)
          -s SECONDS    refresh interval (default 1)
          -n COUNT      exit after COUNT refreshes
          -b            batch mode: print each frame as plain text, no screen control
        The password comes from PGPASSWORD, else it is asked for when the server wants one.
        Keys: q (or Ctrl-C) quits.

        """

    /// `top`'s arguments (after the word `top`).
    static func parse(_ args: [String]) throws(UsageError) -> TopOptions {
        var o = TopOptions()
        var i = 0
        func value(_ flag: String) throws(UsageError) -> String {
            guard i + 1 < args.count else { throw UsageError("\(flag) needs a value") }
            i += 1
            return args[i]
        }
        while i < args.count {
            let a = args[i]
            // -hHOST, -p6432: psql accepts the value glued to the flag.
            var flag = a, glued: String? = nil
            if a.hasPrefix("-") && !a.hasPrefix("--") && a.count > 2 {
                flag = String(a.prefix(2))
                glued = String(a.dropFirst(2))
            }
            func arg() throws(UsageError) -> String {
                if let glued { return glued }
                return try value(flag)
            }
            switch flag {
            case "-h", "--host": o.host = try arg()
            case "-p", "--port":
                let v = try arg()
                guard let p = Int(v), p > 0, p < 65536 else { throw UsageError("invalid port \(v)") }
                o.port = p
            case "-U", "--username": o.user = try arg()
            case "-d", "--dbname": o.database = try arg()
            case "-s", "--delay":
                let v = try arg()
                guard let d = Double(v), d >= 0.1, d <= 3600 else { throw UsageError("invalid interval \(v)") }
                o.delay = d
            case "-n", "--iterations":
                let v = try arg()
                guard let n = Int(v), n > 0 else { throw UsageError("invalid count \(v)") }
                o.iterations = n
            case "-b", "--batch":
                if glued != nil { throw UsageError("unknown option \(a) for top") }
                o.batch = true
            case "--help":
                o.help = true
            default:
                throw UsageError("unknown option \(a) for top")
            }
            i += 1
        }
        return o
    }

    /// The connection target: options, then PGHOST/PGPORT/PGUSER, then psql's defaults.
    static func target(_ o: TopOptions, environment: (String) -> String?) -> AdminTarget {
        let host = o.host ?? environment("PGHOST").flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        let port = o.port ?? environment("PGPORT").flatMap { Int($0) } ?? 6432
        let user = o.user ?? environment("PGUSER").flatMap { $0.isEmpty ? nil : $0 }
            ?? environment("USER") ?? "pgbouncer"
        return AdminTarget(host: host, port: port, user: user, database: o.database)
    }

    static func env(_ name: String) -> String? { Posix.getenv(name) }

    static func run(_ options: TopOptions) -> Int32 {
        if options.help {
            print(usage, terminator: "")
            return 0
        }
        let target = target(options, environment: env)
        let client = AdminClient(target: target)
        do throws(AdminClientError) {
            try client.connect(password: { env("PGPASSWORD") ?? Terminal.askPassword("Password for user \(target.user): ") })
        } catch {
            SupervisorMain.writeStderr("pgswift top: \(error)\n")
            return 1
        }
        let title = target.unixSocketPath ?? "\(target.host):\(target.port)"
        var terminal: Terminal? = nil
        if !options.batch {
            guard let t = Terminal.enter() else {
                SupervisorMain.writeStderr("pgswift top: standard input is not a terminal (use -b for batch mode)\n")
                return 1
            }
            terminal = t
        }
        defer { terminal?.leave() }
        var previous: [TopPatternSample]? = nil
        var previousAt = monotonicSeconds()
        var count = 0
        while true {
            let frame: TopFrame
            let now = monotonicSeconds()
            do throws(AdminClientError) {
                let pools = TopModel.pools(try client.query("SHOW POOLS"))
                let samples = TopModel.patterns(try client.query("SHOW QUERIES"))
                frame = TopFrame(title: title, clock: clock(), intervalSeconds: now - previousAt, pools: pools,
                                 patterns: TopModel.diff(previous: previous ?? [], current: samples),
                                 patternCount: samples.count, firstSample: previous == nil)
                previous = samples
                previousAt = now
            } catch {
                terminal?.leave()
                terminal = nil
                SupervisorMain.writeStderr("pgswift top: \(error)\n")
                return 1
            }
            count += 1
            if let t = terminal {
                let size = t.size()
                t.draw(TopModel.ansi(TopModel.render(frame, width: size.cols, height: size.rows)))
            } else {
                print(TopModel.render(frame, width: 200, height: 60, fill: false).joined(separator: "\n") + "\n")
            }
            if options.iterations > 0 && count >= options.iterations { return 0 }
            // Wait for the next refresh, or a key.
            let deadline = monotonicSeconds() + options.delay
            while true {
                let left = deadline - monotonicSeconds()
                if left <= 0 { break }
                if let t = terminal {
                    if let key = t.readKey(timeoutMillis: Int32(left * 1000)) {
                        if key == UInt8(ascii: "q") || key == UInt8(ascii: "Q") || key == 3 || key == 4 { return 0 }
                    }
                } else {
                    Clock.sleep(nanos: Int64(min(left, 1) * 1e9))
                }
            }
        }
    }

    static func monotonicSeconds() -> Double { Double(Clock.monotonicNanos()) / 1e9 }

    /// "HH:MM:SS" of the wall clock, UTC (as pgswift's log lines).
    static func clock() -> String {
        let t = Clock.wallClock().seconds % 86_400
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(two(t / 3600)):\(two(t / 60 % 60)):\(two(t % 60)) UTC"
    }
}

/// The screen side of the terminal: raw mode (Shared/System/TerminalIO.swift) plus the alternate
/// screen with the cursor hidden; `leave` restores both.
final class Terminal {
    private let raw: RawTerminal
    private var active = true

    private init(_ raw: RawTerminal) { self.raw = raw }

    static func enter() -> Terminal? {
        guard let r = RawTerminal.enter() else { return nil }
        let t = Terminal(r)
        t.draw("\u{1B}[?1049h\u{1B}[?25l\u{1B}[H\u{1B}[2J")
        return t
    }

    func leave() {
        guard active else { return }
        active = false
        draw("\u{1B}[?25h\u{1B}[?1049l")
        raw.leave()
    }

    deinit { leave() }

    func size() -> (rows: Int, cols: Int) { raw.size() }
    func readKey(timeoutMillis: Int32) -> UInt8? { raw.readKey(timeoutMillis: timeoutMillis) }
    func draw(_ s: String) { _ = Array(s.utf8).withUnsafeBytes { Posix.writeAll(1, $0) } }
    static func askPassword(_ prompt: String) -> String? { RawTerminal.askPassword(prompt) }
}
