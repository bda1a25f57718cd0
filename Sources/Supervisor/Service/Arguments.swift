// Command line of `pgswift`: what to do, parsed without side effects so it can be unit-tested.

struct SupervisorOptions: Equatable, Sendable {
    var configPath: String
    /// How many -v were given (added to the config's `verbose`, passed on to workers).
    var verbosity = 0
    /// -q: nothing on stderr once started; the logfile, when set, still gets every line.
    var quiet = false
}

enum SupervisorCommand: Equatable, Sendable {
    case run(SupervisorOptions)
    case checkConfig(SupervisorOptions)
    /// `pgswift upgrade [-c] CONFIG`: ask the running service for a rolling upgrade (UpgradeCLI.swift).
    case upgrade(SupervisorOptions)
    /// `pgswift top [-h HOST] [-p PORT] [-U USER]`: a live view over the admin console (Top/TopCLI.swift).
    case top(TopOptions)
    case help
    case version
}

/// A command line we cannot act on; `pgswift` prints it with the usage and exits 1 (as PgBouncer does).
struct UsageError: Error, Equatable, Sendable, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

enum Arguments {
    static let shortUsage = "usage: pgswift [-v] [-q] CONFIG  (pgswift --help for more)\n"

    static let usage = """
        usage: pgswift [-v] [-q] CONFIG
               pgswift --check-config CONFIG
               pgswift upgrade -c CONFIG
               pgswift top [-h HOST] [-p PORT] [-U USER] [-d DATABASE]   (pgswift top --help)
               pgswift --help | --version

        Runs the pooler in the foreground (under systemd use Type=notify).
          -v, --verbose        more logging (repeat for more)
          -q, --quiet          nothing on stderr once started (the logfile still gets every line)
          -t, --check-config   validate CONFIG: 0 if valid, 1 and FILE:LINE: reason if not
          -h, --help           show this text
          -V, --version        show the version

        Signals: SIGHUP reload; SIGTERM exit once clients have left; SIGINT exit once server
        connections are released; SIGQUIT or a second SIGTERM/SIGINT exit now;
        SIGUSR1 pause; SIGUSR2 resume.

        `pgswift upgrade -c CONFIG` asks the running service (over the admin Unix socket of CONFIG)
        to replace every worker with one started from the binaries now on disk, without dropping
        clients, and prints one line per worker slot; exit status 0 when every slot was replaced.

        `pgswift top` shows the pools and the busiest query patterns of the last second, read from
        the admin console of a running pgswift (local or remote) like psql connects to it; q quits.

        """

    /// Parses the arguments after the program name.
    static func parse(_ args: [String]) throws(UsageError) -> SupervisorCommand {
        if args.first == "upgrade" { return try parseUpgrade(Array(args.dropFirst())) }
        if args.first == "top" { return .top(try TopCLI.parse(Array(args.dropFirst()))) }
        var verbosity = 0
        var quiet = false
        var check = false
        var positional: [String] = []
        var onlyPositional = false

        for arg in args {
            if onlyPositional || arg == "-" || !arg.hasPrefix("-") {
                positional.append(arg)
                continue
            }
            switch arg {
            case "--":
                onlyPositional = true
            case "--help":
                return .help
            case "--version":
                return .version
            case "--verbose":
                verbosity += 1
            case "--quiet":
                quiet = true
            case "--check-config":
                check = true
            case "--daemon":
                throw refused("d")
            case "--reboot":
                throw refused("R")
            case _ where arg == "--user" || arg.hasPrefix("--user="):
                throw refused("u")
            default:
                if arg.hasPrefix("--") { throw UsageError("unknown option \(arg)") }
                // Bundled short options: -vv, -vq, -tv...
                for letter in arg.dropFirst() {
                    switch letter {
                    case "h": return .help
                    case "V": return .version
                    case "v": verbosity += 1
                    case "q": quiet = true
                    case "t": check = true
                    case "d", "R", "u": throw refused(letter)
                    default: throw UsageError("unknown option -\(letter)")
                    }
                }
            }
        }
        guard positional.count == 1, let path = positional.first, !path.isEmpty else {
            throw UsageError(positional.isEmpty ? "missing CONFIG file" : "expected one CONFIG file, got \(positional.count) arguments")
        }
        let options = SupervisorOptions(configPath: path, verbosity: verbosity, quiet: quiet)
        return check ? .checkConfig(options) : .run(options)
    }

    /// `upgrade -c CONFIG` (or `upgrade CONFIG`).
    static func parseUpgrade(_ args: [String]) throws(UsageError) -> SupervisorCommand {
        var path: String?
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "-c" || a == "--config" {
                guard i + 1 < args.count else { throw UsageError("-c needs a CONFIG file") }
                path = args[i + 1]
                i += 2
                continue
            }
            if a.hasPrefix("-") { throw UsageError("unknown option \(a) for upgrade") }
            if path != nil { throw UsageError("upgrade takes one CONFIG file") }
            path = a
            i += 1
        }
        guard let path, !path.isEmpty else { throw UsageError("upgrade needs -c CONFIG") }
        return .upgrade(SupervisorOptions(configPath: path))
    }

    /// PgBouncer options that make no sense for pgswift get a reason rather than "unknown option".
    private static func refused(_ letter: Character) -> UsageError {
        switch letter {
        case "d":
            return UsageError("-d (daemonize) is not supported: pgswift runs in the foreground; run it under systemd (Type=notify) or a process supervisor")
        case "R":
            return UsageError("-R (online restart) is not supported")
        default:
            return UsageError("-u (switch user) is not supported: start pgswift as the user it should run as (systemd User=)")
        }
    }
}
