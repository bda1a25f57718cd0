// pgswift-worker entry point: parse the supervisor's arguments, load the config, run the loop.
import Shared
import Glibc

func workerUsage() -> Never {
    let text = "usage: pgswift-worker --config FILE --slot N --tcp-fds FD[,FD...] [--unix-fds FD[,FD...]] [--control-fd FD] [--respawned] [--handoff-fd FD] [--clients-fd FD [--clients-word N]] [--set KEY=VALUE]... [--peer-id N] [-v]\n"
        + "pgswift-worker is started by the pgswift supervisor; it is not meant to be run by hand.\n"
    var t = text
    t.withUTF8 { _ = Posix.writeAll(2, UnsafeRawBufferPointer($0)) }
    Posix.exit(1)
}

func parseWorkerArguments(_ args: [String]) -> WorkerOptions? {
    var o = WorkerOptions(configPath: "", slot: 0, tcpFDs: [], unixFDs: [], controlFD: -1, verbose: 0)
    var i = 1
    func fds(_ s: String) -> [Int32] { s.split(separator: ",").compactMap { Int32($0) } }
    while i < args.count {
        let a = args[i]
        let next: String? = i + 1 < args.count ? args[i + 1] : nil
        switch a {
        case "--config": guard let n = next else { return nil }; o.configPath = n; i += 1
        case "--slot": guard let n = next, let v = Int32(n) else { return nil }; o.slot = v; i += 1
        case "--tcp-fds": guard let n = next else { return nil }; o.tcpFDs = fds(n); i += 1
        case "--unix-fds": guard let n = next else { return nil }; o.unixFDs = fds(n); i += 1
        case "--control-fd": guard let n = next, let v = Int32(n) else { return nil }; o.controlFD = v; i += 1
        case "-v", "--verbose": o.verbose += 1
        case "--respawned": o.respawned = true
        case "--handoff-fd": guard let n = next, let v = Int32(n) else { return nil }; o.handoffFD = v; i += 1
        case "--clients-fd": guard let n = next, let v = Int32(n) else { return nil }; o.clientsFD = v; i += 1
        case "--peer-id": guard let n = next, let v = Int(n), v >= 0 && v <= 0xFFFF else { return nil }; o.peerID = v; i += 1
        case "--clients-word": guard let n = next, let v = Int(n), v >= 0 else { return nil }; o.clientsWord = v; i += 1
        case "--set":
            guard let n = next, let eq = n.firstIndex(of: "=") else { return nil }
            o.overrides.append(ConfigOverride(key: String(n[..<eq]), value: String(n[n.index(after: eq)...])))
            i += 1
        case "--version":
            print("pgswift-worker \(PgswiftVersion.string)")
            Posix.exit(0)
        default: return nil
        }
        i += 1
    }
    if o.configPath.isEmpty { return nil }
    return o
}

guard let options = parseWorkerArguments(CommandLine.arguments) else { workerUsage() }
var bootLog = Logger(who: "w\(options.slot)")
Signals.ignoreSIGPIPE()
// No PR_SET_PDEATHSIG: a worker outlives a crashed supervisor and drains (Handoff.swift, supervisorLost).
_ = Posix.raiseOpenFilesLimit()
do {
    let config = try Config.load(path: options.configPath, overrides: options.overrides, environment: .process())
    var users = Userlist(entries: [:])
    if let af = config.authFile, !af.isEmpty { users = try Userlist.load(path: af) }
    let worker = try Worker(options: options, config: config, userlist: users)
    try worker.run()
    Posix.exit(0)
} catch {
    bootLog.fatal("worker \(options.slot) cannot start: \(error)")
    Posix.exit(1)
}
