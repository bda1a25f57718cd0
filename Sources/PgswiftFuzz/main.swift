// pgswift-fuzz: runs a phase of generated inputs against pgswift, or shows/replays one input.
#if canImport(Glibc)
import Glibc
#endif
import FuzzCore

let usage = """
usage: pgswift-fuzz run    --phase pre|post --seed S --socket PATH [--inputs N] [--seconds T] [--conns C]
                           [--timeout T] [--framing PCT] [--out DIR] [--user U --database D ...]
       pgswift-fuzz show   --phase pre|post --seed S --index I           (print one input)
       pgswift-fuzz replay --phase pre|post --seed S --index I --socket PATH [--repeat N]
       pgswift-fuzz replay-file FILE --phase pre|post --socket PATH [--repeat N] [--canary]
  Input I of seed S is the same bytes on every machine and run: replaying (S, I) sends exactly what the
  run sent. replay-file sends a saved input (fuzz/regressions/*.bin, fuzz/out/*.bin) and half-closes
  (with --canary, post-auth: Sync and the canary query instead, as the run does for well-framed inputs);
  post-auth replays log in first and afterwards check that a normal query is answered within 5 s.
"""

struct Command {
    var name = ""
    var o = RunOptions()
    var index: UInt64 = 0
    var file: String?
    var repeatCount = 1
    var canary = false
}

func parseArguments(_ all: [String]) -> Command {
    var cmd = Command()
    guard let first = all.first else {
        Net.eprint(usage)
        exit(2)
    }
    cmd.name = first
    let args = Array(all.dropFirst())
    var i = 0
    func value() -> String {
        i += 1
        guard i < args.count else {
            Net.eprint("missing value for \(args[i - 1])\n\(usage)")
            exit(2)
        }
        return args[i]
    }
    while i < args.count {
        switch args[i] {
        case "--phase":
            guard let p = FuzzPhase(name: value()) else { Net.eprint(usage); exit(2) }
            cmd.o.phase = p
        case "--seed": cmd.o.seed = UInt64(value()) ?? 1
        case "--inputs": cmd.o.inputs = UInt64(value()) ?? cmd.o.inputs
        case "--seconds": cmd.o.seconds = Double(value()) ?? cmd.o.seconds
        case "--conns": cmd.o.conns = Int(value()) ?? cmd.o.conns
        case "--timeout": cmd.o.timeout = Double(value()) ?? cmd.o.timeout
        case "--framing": cmd.o.framingPercent = Int(value())
        case "--socket": cmd.o.socketPath = value()
        case "--out": cmd.o.outDir = value()
        case "--index": cmd.index = UInt64(value()) ?? 0
        case "--repeat": cmd.repeatCount = max(1, Int(value()) ?? 1)
        case "--canary": cmd.canary = true
        case "--user": cmd.o.names.trustUser = value()
        case "--md5-user": cmd.o.names.md5User = value()
        case "--scram-user": cmd.o.names.scramUser = value()
        case "--database": cmd.o.names.database = value()
        case "--table": cmd.o.names.table = value()
        case let a where !a.hasPrefix("--") && cmd.name == "replay-file" && cmd.file == nil: cmd.file = a
        default:
            Net.eprint("unknown argument \(args[i])\n\(usage)")
            exit(2)
        }
        i += 1
    }
    return cmd
}

let cmd = parseArguments(Array(CommandLine.arguments.dropFirst()))
let o = cmd.o
let index = cmd.index
let command = cmd.name
signal(SIGPIPE, SIG_IGN)

func hex(_ b: [UInt8], limit: Int = 512) -> String {
    let digits = Array("0123456789abcdef")
    var s = ""
    for (k, x) in b.prefix(limit).enumerated() {
        if k > 0 && k % 32 == 0 { s += "\n" }
        s.append(digits[Int(x >> 4)]); s.append(digits[Int(x & 15)])
    }
    return s + (b.count > limit ? "\n... (\(b.count) bytes)" : "")
}

switch command {
case "run":
    guard !o.socketPath.isEmpty else { Net.eprint(usage); exit(2) }
    Net.eprint("pgswift-fuzz: phase \(o.phase.name), seed \(o.seed), up to \(o.inputs) inputs in \(o.seconds) s, "
               + "\(o.conns) connections, socket \(o.socketPath)")
    let d = Driver(o)
    let start = Net.now()
    let c = d.run()
    let secs = Net.now() - start
    print("RESULT phase=\(o.phase.name) seed=\(o.seed) inputs=\(c.run) seconds=\(format1(secs)) "
          + "rate=\(Int(Double(c.run) / max(secs, 0.001))) answered=\(c.answered) errors=\(c.errors) closed=\(c.closed) late_closes=\(c.lateCloses) server_down=\(c.serverDown) "
          + "framing=\(c.framing) cut_short=\(c.cutShort) timeouts=\(c.timeouts) garbled=\(c.garbled) crossed=\(c.crossed) logins=\(c.logins) "
          + "login_failures=\(c.loginFailures) connect_busy=\(c.connectBusy) connect_failures=\(c.connectFailures)"
          + (d.fatal.map { " fatal=\"\($0)\"" } ?? ""))
    exit(d.fatal == nil ? 0 : 1)
case "show":
    let input = Mutator(phase: o.phase, names: o.names, framingPercent: o.framingPercent).input(seed: o.seed, index: index)
    print("phase=\(o.phase.name) seed=\(o.seed) index=\(index) bytes=\(input.bytes.count) breaks_framing=\(input.breaksFraming)")
    print("steps: \(input.steps.joined(separator: " "))")
    print(hex(input.bytes))
case "replay", "replay-file":
    guard !o.socketPath.isEmpty else { Net.eprint(usage); exit(2) }
    var bytes: [UInt8]
    var breaks = true
    if command == "replay" {
        let input = Mutator(phase: o.phase, names: o.names, framingPercent: o.framingPercent).input(seed: o.seed, index: index)
        print("phase=\(o.phase.name) seed=\(o.seed) index=\(index) bytes=\(input.bytes.count) breaks_framing=\(input.breaksFraming)")
        print("steps: \(input.steps.joined(separator: " "))")
        print(hex(input.bytes, limit: 256))
        bytes = input.bytes
        breaks = input.breaksFraming || o.phase == .preAuth
    } else {
        guard let f = cmd.file, let b = Net.readFile(f) else {
            Net.eprint("cannot read \(cmd.file ?? "(no file given)")")
            exit(2)
        }
        bytes = b
        breaks = !(cmd.canary && o.phase == .postAuth)
        print("file=\(f) bytes=\(b.count) phase=\(o.phase.name)")
    }
    exit(Replay(o).run(bytes, halfClose: breaks, times: cmd.repeatCount) ? 0 : 1)
default:
    Net.eprint(usage)
    exit(2)
}

