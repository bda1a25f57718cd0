// The Debian package end to end: make deb, lintian, dpkg -i, the unit's ExecStart under a fake systemd, upgrade, remove, purge.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Issue 9. These tests install the package on this machine, so they run only as root, where no
/// systemd is running (CI's container: postinst would otherwise start the packaged service for real)
/// and where no pgswift package is installed already. They leave the machine as they found it:
/// the package purged, the `pgswift` user removed if they created it.
final class DebianPackageTests: XCTestCase {

    override class func tearDown() {
        DebianBuild.removePackages()
        super.tearDown()
    }

    /// Acceptance 1, 2, 4 and 5: contents, lintian, install, serving through the packaged config with
    /// READY=1 on a fake NOTIFY_SOCKET, systemd-analyze verify, then -r keeps conffiles and -P leaves nothing.
    func testBuildInstallServeRemoveAndPurge() throws {
        try DebianMachine.requireSuitable()
        let packages = try DebianBuild.shared()
        let deb = packages.first

        // 1. Contents, control fields, lintian.
        let contents = try DebianMachine.run(["dpkg-deb", "--contents", deb])
        for path in DebianMachine.expectedFiles {
            XCTAssertTrue(contents.contains("." + path + "\n") || contents.contains("." + path + " "),
                          "\(path) missing from the package:\n\(contents)")
        }
        let conffiles = try DebianMachine.run(["dpkg-deb", "--info", deb, "conffiles"])
        XCTAssertEqual(conffiles.split(separator: "\n").map(String.init).sorted(),
                       ["/etc/pgswift/pgswift.ini", "/etc/pgswift/userlist.txt"])
        let depends = try DebianMachine.run(["dpkg-deb", "--field", deb, "Depends"])
        XCTAssertTrue(depends.contains("libssl3") && depends.contains("libsystemd0") && depends.contains("libc6"),
                      "Depends should be computed from the linked libraries: \(depends)")
        XCTAssertFalse(depends.lowercased().contains("swift"), "Depends names a Swift runtime: \(depends)")
        let lintian = try runCommand(["lintian", "--fail-on", "error", deb], timeout: 600)
        XCTAssertTrue(lintian.succeeded, "lintian reports errors:\n\(lintian)")
        XCTAssertFalse(lintian.stdout.split(separator: "\n").contains { $0.hasPrefix("E:") }, lintian.stdout)

        let machine = try DebianMachine()
        defer { machine.cleanUp() }

        // 2. Install; the maintainer script made the user, the run folder and the permissions.
        try machine.install(deb)
        XCTAssertEqual(try machine.packageStatus(), "install ok installed")
        XCTAssertNotNil(getpwnam("pgswift"), "postinst did not create the pgswift user")
        XCTAssertEqual(try machine.owner("/etc/pgswift/userlist.txt"), "pgswift:pgswift 640")
        XCTAssertEqual(try machine.owner("/etc/pgswift/pgswift.ini"), "root:pgswift 640")
        XCTAssertEqual(try machine.owner("/run/pgswift"), "pgswift:pgswift 755")
        let installed = try DebianMachine.run(["dpkg", "-L", "pgswift"]).split(separator: "\n").map(String.init)
        // The maintainer scripts are idempotent: the same package again configures cleanly.
        try machine.install(deb)
        XCTAssertEqual(try machine.packageStatus(), "install ok installed")
        XCTAssertEqual(try machine.owner("/etc/pgswift/userlist.txt"), "pgswift:pgswift 640")

        // 5. The installed units (ExecStart's binary and the man pages now exist) pass verify.
        try machine.verifyUnits()

        // 2. The packaged config, edited to reach the test PostgreSQL, run as the unit runs it.
        let pg = try PostgresServer.shared()
        let port = try machine.configure(postgres: pg)
        let notify = try NotifySocket()
        defer { notify.shutdown() }
        let service = try machine.startAsUnit(notifySocket: notify)
        defer { service.stop() }
        XCTAssertTrue(notify.waitFor("READY=1", timeout: 90),
                      "READY=1 never arrived; got \(notify.messages()); log:\n\(service.log())")
        let scram = ClientTarget(port: port, user: "u_scram", database: "testdb", password: PostgresServer.passwords["u_scram"])
        let r = try Psql.run(scram, "select 40 + 2")
        XCTAssertEqual(r.stdout.trimmed, "42", "\(r)\nlog:\n\(service.log())")
        XCTAssertTrue(FileManager.default.fileExists(atPath: "/run/pgswift/.s.PGSQL.\(port)"),
                      "no Unix socket in the packaged unix_socket_dir")
        // The supervisor found its worker in /usr/lib/pgswift.
        let workers = ProcFS.children(of: service.pid)
        XCTAssertFalse(workers.isEmpty)
        for w in workers {
            XCTAssertEqual(try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(w)/exe"),
                           "/usr/lib/pgswift/pgswift-worker")
        }
        // KillSignal=SIGINT: a clean exit, STOPPING=1 first.
        XCTAssertEqual(service.stop(), 0, service.log())
        XCTAssertTrue(notify.waitFor("STOPPING=1", timeout: 10), "\(notify.messages())")

        // 4. Remove: the package's files are gone, the conffiles (with our edit) stay.
        try DebianMachine.dpkg(["-r", "pgswift"])
        XCTAssertEqual(try machine.packageStatus(), "deinstall ok config-files")
        let conffileSet: Set<String> = ["/etc/pgswift/pgswift.ini", "/etc/pgswift/userlist.txt"]
        for path in installed where !conffileSet.contains(path) && !DebianMachine.isDirectory(path) {
            XCTAssertFalse(DebianMachine.exists(path), "\(path) left behind by dpkg -r")
        }
        XCTAssertTrue(readTextFile("/etc/pgswift/pgswift.ini").contains("listen_port = \(port)"),
                      "the edited conffile did not survive dpkg -r")
        XCTAssertTrue(DebianMachine.exists("/etc/pgswift/userlist.txt"))

        // 4. Purge: nothing of the package left, /etc/pgswift gone.
        try DebianMachine.dpkg(["-P", "pgswift"])
        XCTAssertEqual(try machine.packageStatus(), "not-installed")
        for path in installed + ["/etc/pgswift", "/usr/lib/pgswift", "/usr/share/doc/pgswift", "/run/pgswift"]
            where !DebianMachine.sharedDirectories.contains(path) {
            XCTAssertFalse(DebianMachine.exists(path), "\(path) left behind by dpkg -P")
        }
    }

    /// Acceptance 3: a package of a higher version installed over the running service, then the
    /// command postinst runs (`pgswift upgrade -c /etc/pgswift/pgswift.ini`; no systemd here, so the
    /// test runs it): pgbench across it sees no failed transaction, and the supervisor keeps its PID.
    func testUpgradeOverRunningServiceDropsNothing() throws {
        try DebianMachine.requireSuitable()
        let packages = try DebianBuild.shared()
        try DebianBuild.requireUpgradeCommand()

        let machine = try DebianMachine()
        defer { machine.cleanUp() }
        try machine.install(packages.first)
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        let port = try machine.configure(postgres: pg)
        let notify = try NotifySocket()
        defer { notify.shutdown() }
        let service = try machine.startAsUnit(notifySocket: notify)
        defer { service.stop() }
        XCTAssertTrue(notify.waitFor("READY=1", timeout: 90), "\(notify.messages())\n\(service.log())")
        let oldWorkers = Set(ProcFS.children(of: service.pid))

        let bench = ClientTarget(port: port, user: "bench", database: "bench", password: PostgresServer.passwords["bench"])
        let dir = try makeTempDirectory(prefix: "debbench")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pgbench = try ChildProcess.spawn(
            [try PostgresTools.path("pgbench"), "-h", "127.0.0.1", "-p", String(port), "-U", "bench",
             "-c", "10", "-j", "2", "-T", "25", "-n", "bench"],
            environment: bench.environment, stdoutPath: dir + "/out", stderrPath: dir + "/err")
        defer { pgbench.terminate(SIGKILL, grace: 0) }
        XCTAssertTrue(try waitUntil(timeout: 30) { try pg.countBackends(user: "bench", db: "bench") > 0 },
                      "pgbench never got going: \(pgbench.stderrText())")

        try machine.install(packages.second)
        XCTAssertEqual(try DebianMachine.run(["dpkg-query", "-W", "-f=${Version}", "pgswift"]), DebianBuild.secondVersion)
        let upgrade = try runCommand(DebianMachine.postinstUpgradeCommand, timeout: 600)
        XCTAssertTrue(upgrade.succeeded, "\(upgrade)\nlog:\n\(service.log())")

        XCTAssertNotNil(pgbench.wait(timeout: 120), "pgbench did not finish")
        let summary = Pgbench.parse(pgbench.stdoutText())
        print("DebianPackageTests: pgbench across the package upgrade: \(summary.transactions ?? -1) transactions, \(summary.failedTransactions ?? 0) failed")
        XCTAssertEqual(pgbench.poll(), 0, "pgbench: \(pgbench.stdoutText())\n\(pgbench.stderrText())")
        XCTAssertEqual(summary.failedTransactions ?? 0, 0, pgbench.stdoutText())
        XCTAssertGreaterThan(summary.transactions ?? 0, 0, pgbench.stdoutText())
        XCTAssertTrue(service.isRunning, "the supervisor is gone after the upgrade:\n\(service.log())")
        let newWorkers = Set(ProcFS.children(of: service.pid))
        XCTAssertTrue(newWorkers.isDisjoint(with: oldWorkers), "workers not replaced: \(oldWorkers) → \(newWorkers)")
        let r = try Psql.run(ClientTarget(port: port, user: "u_scram", database: "testdb",
                                          password: PostgresServer.passwords["u_scram"]), "select 1")
        XCTAssertEqual(r.stdout.trimmed, "1", "\(r)")
        XCTAssertEqual(service.stop(), 0, service.log())
    }

    /// The maintainer scripts' systemd paths, which CI's container cannot take for real: each script
    /// runs in a private mount namespace whose /run is a fresh tmpfs (with or without
    /// /run/systemd/system), with systemctl, deb-systemd-invoke, deb-systemd-helper, pgswift, adduser
    /// install, chown, chmod and dpkg-statoverride replaced by stand-ins that log their arguments.
    /// Nothing on the machine changes.
    func testMaintainerScriptsTakeTheRightSystemdPath() throws {
        guard runningAsRoot else { throw XCTSkip("needs root for a private mount namespace (unshare -m)") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else { throw XCTSkip("no unshare") }
        let scripts = DebianBuild.repoRoot + "/Packaging/debian"
        let dir = try makeTempDirectory(prefix: "maint")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        // name, systemd running, active units, upgrade exit status, script and arguments.
        let scenarios: [(String, Bool, [String], Int, String)] = [
            ("install", true, [], 0, "postinst configure"),
            ("upgrade", true, ["pgswift.service", "pgswift@b.service"], 0, "postinst configure 0.1.0-1"),
            ("upgrade-fails", true, ["pgswift.service"], 1, "postinst configure 0.1.0-1"),
            ("upgrade-stopped", true, [], 0, "postinst configure 0.1.0-1"),
            ("upgrade-nosystemd", false, ["pgswift.service"], 0, "postinst configure 0.1.0-1"),
            ("prerm-upgrade", true, ["pgswift.service"], 0, "prerm upgrade 0.1.0-2"),
            ("prerm-remove", true, ["pgswift.service", "pgswift@b.service"], 0, "prerm remove"),
            ("prerm-remove-nosystemd", false, ["pgswift.service"], 0, "prerm remove"),
            ("postrm-remove", true, [], 0, "postrm remove"),
        ]
        var script = #"""
            set -u
            mount -t tmpfs pgswift-test /run || exit 90
            bin=\#(dir)/bin; mkdir -p $bin
            cat > $bin/stub <<'STUB'
            #!/bin/sh
            tool=$(basename "$0")
            echo "$tool $*" >> "$STUB_LOG"
            case "$tool $*" in
              "systemctl --quiet is-active "*) grep -qx "$3" "$STUB_ACTIVE"; exit $? ;;
              "systemctl list-units "*) grep '@' "$STUB_ACTIVE" | sed 's/$/ loaded active running x/'; exit 0 ;;
              "pgswift upgrade "*) exit "$STUB_UPGRADE_RC" ;;
            esac
            exit 0
            STUB
            chmod +x $bin/stub
            for tool in systemctl deb-systemd-invoke deb-systemd-helper pgswift adduser install chown chmod dpkg-statoverride; do
              ln -s stub $bin/$tool
            done
            run() {
              name=$1; systemd=$2; active=$3; rc=$4; shift 4
              rm -rf /run/systemd; [ "$systemd" = yes ] && mkdir -p /run/systemd/system
              printf '%s\n' $active > \#(dir)/$name.active
              STUB_LOG=\#(dir)/$name.log STUB_ACTIVE=\#(dir)/$name.active STUB_UPGRADE_RC=$rc PATH=$bin:$PATH \
                sh \#(scripts)/"$@" > \#(dir)/$name.out 2>&1
              echo $? > \#(dir)/$name.status
              touch \#(dir)/$name.log
            }

            """#
        for (name, systemd, active, rc, args) in scenarios {
            script += "run \(name) \(systemd ? "yes" : "no") '\(active.joined(separator: " "))' \(rc) \(args)\n"
        }
        let r = try runCommand(["/usr/bin/unshare", "-m", "sh", "-c", script], timeout: 120)
        guard r.succeeded else {
            if r.status == 90 { throw XCTSkip("cannot mount a tmpfs in a private namespace here: \(r)") }
            throw E2EError("maintainer script harness: \(r)")
        }
        func log(_ name: String) -> [String] {
            XCTAssertEqual(readTextFile("\(dir)/\(name).status").trimmed, "0",
                           "\(name) failed: \(readTextFile("\(dir)/\(name).out"))")
            return readTextFile("\(dir)/\(name).log").split(separator: "\n").map(String.init)
        }
        func has(_ lines: [String], _ line: String) -> Bool { lines.contains(line) }
        func hasPrefix(_ lines: [String], _ p: String) -> Bool { lines.contains { $0.hasPrefix(p) } }

        let install = log("install")
        XCTAssertTrue(has(install, "deb-systemd-helper enable pgswift.service"), "\(install)")
        XCTAssertTrue(has(install, "systemctl --system daemon-reload"), "\(install)")
        XCTAssertTrue(has(install, "deb-systemd-invoke start pgswift.service"), "\(install)")
        XCTAssertFalse(hasPrefix(install, "pgswift "), "\(install)")

        let upgrade = log("upgrade")
        XCTAssertTrue(has(upgrade, "pgswift upgrade -c /etc/pgswift/pgswift.ini"), "\(upgrade)")
        XCTAssertTrue(has(upgrade, "pgswift upgrade -c /etc/pgswift/b.ini"), "\(upgrade)")
        XCTAssertFalse(hasPrefix(upgrade, "deb-systemd-invoke"), "an upgrade must not restart or stop: \(upgrade)")

        let fails = log("upgrade-fails")
        XCTAssertTrue(has(fails, "pgswift upgrade -c /etc/pgswift/pgswift.ini"), "\(fails)")
        XCTAssertTrue(has(fails, "deb-systemd-invoke restart pgswift.service"), "\(fails)")

        let stopped = log("upgrade-stopped")
        XCTAssertFalse(hasPrefix(stopped, "pgswift ") || hasPrefix(stopped, "deb-systemd-invoke"),
                       "a stopped service stays stopped: \(stopped)")

        let noSystemd = log("upgrade-nosystemd")
        XCTAssertFalse(hasPrefix(noSystemd, "systemctl") || hasPrefix(noSystemd, "deb-systemd-invoke")
                       || hasPrefix(noSystemd, "pgswift "), "no systemd: no service action: \(noSystemd)")
        XCTAssertTrue(hasPrefix(noSystemd, "install -d -o pgswift -g pgswift -m 0755 /run/pgswift"), "\(noSystemd)")

        XCTAssertFalse(hasPrefix(log("prerm-upgrade"), "deb-systemd-invoke"), "prerm must not stop on upgrade")
        let remove = log("prerm-remove")
        XCTAssertTrue(has(remove, "deb-systemd-invoke stop pgswift.service"), "\(remove)")
        XCTAssertTrue(has(remove, "deb-systemd-invoke stop pgswift@b.service"), "\(remove)")
        XCTAssertEqual(log("prerm-remove-nosystemd"), [])
        XCTAssertTrue(has(log("postrm-remove"), "systemctl --system daemon-reload"))
    }
}

// MARK: - Building the packages (once per test process)

/// `make deb` for the version in the sources, then the same binaries repackaged under a higher
/// version (Packaging/build-deb.sh with DEB_VERSION: no Swift recompilation) for the upgrade.
enum DebianBuild {
    static let secondVersion = "0.1.0-1+upgradetest1"

    struct Packages: Sendable {
        let first: String
        let second: String
        let binDir: String
    }

    private final class Holder: @unchecked Sendable {
        let lock = NSLock()
        var packages: Packages?
        var failure: String?
    }
    private static let holder = Holder()

    static var repoRoot: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }

    static func shared() throws -> Packages {
        holder.lock.lock()
        defer { holder.lock.unlock() }
        if let p = holder.packages { return p }
        if let f = holder.failure { throw E2EError(f) }
        do {
            let p = try build()
            holder.packages = p
            return p
        } catch {
            holder.failure = "building the Debian package failed: \(error)"
            throw E2EError(holder.failure!)
        }
    }

    private static func build() throws -> Packages {
        let out = try makeTempDirectory(prefix: "deb")
        let root = repoRoot
        let started = monotonicNow()
        // Under `make test` the outer make's job-server settings would reach this make: drop them.
        let makeEnv = childEnvironment().filter { !["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"].contains($0.key) }
        let make = try runCommand(["make", "-C", root, "deb", "DEB_OUT=\(out)"], environment: makeEnv, timeout: 1500)
        guard make.succeeded else { throw E2EError("make deb: \(make)") }
        print("DebianPackageTests: make deb took \(Int(monotonicNow() - started)) s")
        let version = try upstreamVersion()
        let first = out + "/pgswift_\(version)-1_amd64.deb"
        guard FileManager.default.fileExists(atPath: first) else {
            throw E2EError("make deb did not make \(first): \(make.stdout)")
        }
        var env = childEnvironment()
        env["DEB_VERSION"] = secondVersion
        let binDir = root + "/.build-deb/release"
        let again = try runCommand([root + "/Packaging/build-deb.sh", binDir, out], environment: env, timeout: 300)
        guard again.succeeded else { throw E2EError("build-deb.sh with DEB_VERSION: \(again)") }
        let second = out + "/pgswift_\(secondVersion)_amd64.deb"
        return Packages(first: first, second: second, binDir: binDir)
    }

    /// The packages' temporary folder goes when the class's tests are done.
    static func removePackages() {
        holder.lock.lock()
        defer { holder.lock.unlock() }
        if let p = holder.packages {
            try? FileManager.default.removeItem(atPath: (p.first as NSString).deletingLastPathComponent)
        }
    }

    static func upstreamVersion() throws -> String {
        // Version.swift keeps the version as one marker string, "pgswift-version=X.Y.Z".
        let text = readTextFile(repoRoot + "/Sources/Shared/Util/Version.swift")
        guard let line = text.split(separator: "\n").first(where: { $0.contains("\"pgswift-version=") }),
              let start = line.range(of: "pgswift-version=")?.upperBound, let close = line.lastIndex(of: "\""),
              start < close else {
            throw E2EError("no version in Version.swift")
        }
        return String(line[start..<close])
    }

    /// The in-place upgrade command (issue 7) may not be merged yet: this build's `pgswift` then
    /// rejects `upgrade -c` as an unknown option, and acceptance 3 cannot run.
    static func requireUpgradeCommand() throws {
        let binary = try shared().binDir + "/pgswift"
        let r = try runCommand([binary, "upgrade", "-c", "/nonexistent/pgswift-deb-test.ini"], timeout: 30)
        let said = (r.stdout + r.stderr).trimmed
        if said.contains("unknown option") || said.contains("expected one CONFIG") {
            throw XCTSkip("`pgswift upgrade -c CONFIG` does not exist in this build (it answered: \(said)): the zero-downtime upgrade of issue 7 is not merged yet, so issue 9's upgrade test (acceptance 3) cannot run")
        }
    }
}

// MARK: - The machine the package goes on

/// Installs, configures and removes the package, and puts the machine back as it was.
final class DebianMachine: @unchecked Sendable {
    static let expectedFiles = [
        "/usr/sbin/pgswift", "/usr/lib/pgswift/pgswift-worker", "/etc/pgswift/pgswift.ini",
        "/etc/pgswift/userlist.txt", "/lib/systemd/system/pgswift.service", "/lib/systemd/system/pgswift@.service",
        "/usr/share/man/man8/pgswift.8.gz", "/usr/share/man/man5/pgswift.ini.5.gz",
        "/usr/share/doc/pgswift/changelog.Debian.gz", "/usr/share/doc/pgswift/copyright",
        "/usr/share/pgswift/grafana/pgswift-dashboard.json", "/usr/share/pgswift/prometheus/pgswift-alerts.yml",
    ]
    /// Directories the package lists but shares with the rest of the system.
    static let sharedDirectories: Set<String> = [
        "/.", "/etc", "/lib", "/lib/systemd", "/lib/systemd/system", "/usr", "/usr/lib", "/usr/sbin",
        "/usr/share", "/usr/share/doc", "/usr/share/man", "/usr/share/man/man5", "/usr/share/man/man8",
    ]
    static let unitPath = "/lib/systemd/system/pgswift.service"
    /// What postinst runs on upgrade for pgswift.service.
    static let postinstUpgradeCommand = ["/usr/sbin/pgswift", "upgrade", "-c", "/etc/pgswift/pgswift.ini"]

    private let userExisted: Bool
    private let watchdog: Watchdog

    static func requireSuitable() throws {
        guard runningAsRoot else { throw XCTSkip("the Debian package tests install a package: they need root (CI runs as root)") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/dpkg") else { throw XCTSkip("no dpkg: not a Debian system") }
        if FileManager.default.fileExists(atPath: "/run/systemd/system") {
            throw XCTSkip("systemd is running here: postinst would enable and start the real service on port 6432; the package tests run in containers such as CI's")
        }
        let status = (try? runCommand(["dpkg-query", "-W", "-f=${Status}", "pgswift"]))?.stdout ?? ""
        if status.contains("installed") || status.contains("config-files") || status.contains("half") {
            throw XCTSkip("a pgswift package is already on this machine (\(status)): not touching it")
        }
    }

    init() throws {
        userExisted = getpwnam("pgswift") != nil
        // If this process dies mid-test: purge, drop the user we made (RunningService stops the service).
        let dropUser = userExisted ? "" : "userdel pgswift >/dev/null 2>&1; groupdel pgswift >/dev/null 2>&1"
        watchdog = try Watchdog(cleanup: """
            dpkg -P pgswift >/dev/null 2>&1
            \(dropUser)
            """)
    }

    func cleanUp() {
        _ = try? runCommand(["dpkg", "-P", "pgswift"], timeout: 300)
        if !userExisted && getpwnam("pgswift") != nil {
            _ = try? runCommand(["userdel", "pgswift"])
            _ = try? runCommand(["groupdel", "pgswift"])
        }
        watchdog.cancel()
    }

    func install(_ deb: String) throws { try Self.dpkg(["-i", deb]) }

    static func dpkg(_ args: [String]) throws {
        var env = childEnvironment()
        env["DEBIAN_FRONTEND"] = "noninteractive"
        let r = try runCommand(["dpkg", "--force-confold"] + args, environment: env, timeout: 300)
        guard r.succeeded else { throw E2EError("dpkg \(args.joined(separator: " ")): \(r)") }
    }

    @discardableResult
    static func run(_ argv: [String]) throws -> String {
        let r = try runCommand(argv, timeout: 120)
        guard r.succeeded else { throw E2EError("\(argv.joined(separator: " ")): \(r)") }
        return r.stdout
    }

    func packageStatus() throws -> String {
        let r = try runCommand(["dpkg-query", "-W", "-f=${Status}", "pgswift"])
        return r.succeeded ? r.stdout.trimmed : "not-installed"
    }

    func owner(_ path: String) throws -> String { try Self.run(["stat", "-c", "%U:%G %a", path]).trimmed }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// Follows symlinks: on merged-/usr systems /lib is one.
    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    func verifyUnits() throws {
        for unit in [Self.unitPath] {
            let r = try runCommand(["systemd-analyze", "verify", unit], timeout: 120)
            XCTAssertTrue(r.succeeded && r.stderr.trimmed.isEmpty, "systemd-analyze verify \(unit): \(r)")
        }
        // A template is verified through an instance of it.
        let dir = try makeTempDirectory(prefix: "unit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let instance = dir + "/pgswift@main.service"
        try FileManager.default.copyItem(atPath: "/lib/systemd/system/pgswift@.service", toPath: instance)
        let r = try runCommand(["systemd-analyze", "verify", instance], timeout: 120)
        XCTAssertTrue(r.succeeded && r.stderr.trimmed.isEmpty, "systemd-analyze verify pgswift@main.service: \(r)")
    }

    /// Points the packaged /etc/pgswift/pgswift.ini at `postgres` on a free port, two workers, and
    /// adds two users to the packaged userlist. Each edit must find the packaged text it replaces.
    func configure(postgres pg: PostgresServer) throws -> Int {
        let port = try freePort()
        var ini = readTextFile("/etc/pgswift/pgswift.ini")
        let edits = [
            ("\nlisten_port = 6432\n", "\nlisten_port = \(port)\n"),
            ("\n[databases]\n", "\n[databases]\ntestdb = \(pg.connectionString(dbname: "testdb"))\nbench = \(pg.connectionString(dbname: "bench"))\n"),
            ("\n;workers = 2\n", "\nworkers = 2\n"),
            ("\nunix_socket_dir = /run/pgswift\n", "\nunix_socket_dir = /run/pgswift\n"),
            ("\npool_mode = transaction\n", "\npool_mode = transaction\n"),
        ]
        for (old, new) in edits {
            guard ini.contains(old) else { throw E2EError("the packaged pgswift.ini has no '\(old.trimmed)'") }
            ini = ini.replacingOccurrences(of: old, with: new)
        }
        try ini.write(toFile: "/etc/pgswift/pgswift.ini", atomically: false, encoding: .utf8)
        var users = readTextFile("/etc/pgswift/userlist.txt")
        for name in ["u_scram", "bench"] { users += "\"\(name)\" \"\(PostgresServer.passwords[name]!)\"\n" }
        try users.write(toFile: "/etc/pgswift/userlist.txt", atomically: false, encoding: .utf8)
        let check = try runCommand(Self.asServiceUser(["/usr/sbin/pgswift", "--check-config", "/etc/pgswift/pgswift.ini"]))
        guard check.succeeded else { throw E2EError("the edited config does not check as the pgswift user: \(check)") }
        return port
    }

    /// The unit's User= and ExecStart=, read from the installed unit file.
    static func unitCommand() throws -> (user: String, argv: [String]) {
        let text = readTextFile(unitPath)
        var user = "root"
        var argv: [String] = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("User=") { user = String(line.dropFirst(5)) }
            if line.hasPrefix("ExecStart=") { argv = line.dropFirst(10).split(separator: " ").map(String.init) }
        }
        guard !argv.isEmpty else { throw E2EError("no ExecStart= in \(unitPath)") }
        return (user, argv)
    }

    static func asServiceUser(_ argv: [String]) throws -> [String] {
        let user = try unitCommand().user
        return ["/usr/bin/setpriv", "--reuid=\(user)", "--regid=\(user)", "--init-groups", "--"] + argv
    }

    /// Runs ExecStart as the unit's User=, with NOTIFY_SOCKET set, as systemd would (setpriv execs in
    /// place, so the PID is the supervisor's, as MAINPID would be).
    func startAsUnit(notifySocket: NotifySocket) throws -> RunningService {
        let dir = try makeTempDirectory(prefix: "debsvc")
        let argv = try Self.asServiceUser(try Self.unitCommand().argv)
        var env = childEnvironment()
        env["NOTIFY_SOCKET"] = notifySocket.address
        let child = try ChildProcess.spawn(argv, environment: env, stdoutPath: dir + "/stdout", stderrPath: dir + "/stderr")
        // If this process dies mid-test, the supervisor goes too (its workers drain and exit; with no clients, at once).
        let watchdog = try Watchdog(cleanup: "kill -KILL \(child.pid) 2>/dev/null")
        return RunningService(child: child, dir: dir, watchdog: watchdog)
    }
}

/// The supervisor started from the unit's command line.
final class RunningService: @unchecked Sendable {
    let child: ChildProcess
    let dir: String
    private let watchdog: Watchdog
    private let lock = NSLock()
    private var exitStatus: Int32?

    init(child: ChildProcess, dir: String, watchdog: Watchdog) {
        self.child = child
        self.dir = dir
        self.watchdog = watchdog
    }

    var pid: pid_t { child.pid }
    var isRunning: Bool { child.isRunning }
    func log() -> String { child.stderrText() }

    /// SIGINT (the unit's KillSignal), SIGKILL after 60 s; returns the exit status. Idempotent.
    @discardableResult
    func stop() -> Int32 {
        lock.lock()
        defer { lock.unlock() }
        if let exitStatus { return exitStatus }
        let workers = ProcFS.children(of: child.pid)
        let s = child.terminate(SIGINT, grace: 60)
        for w in workers where ProcFS.isAlive(w) { kill(w, SIGKILL) }
        exitStatus = s
        watchdog.cancel()
        try? FileManager.default.removeItem(atPath: dir)
        return s
    }
}

// MARK: - A fake systemd notify socket

/// What systemd listens on for sd_notify: a Unix datagram socket, here in the abstract namespace so
/// the service user can send to it without file permissions. A reader thread collects the messages
/// until `shutdown()`.
final class NotifySocket: @unchecked Sendable {
    let address: String
    private let fd: Int32
    private let lock = NSLock()
    private var received: [String] = []
    private var closed = false

    init() throws {
        address = "@pgswift-deb-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw E2EError("socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let name = Array(address.utf8.dropFirst())  // abstract: a NUL byte, then the name
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw[0] = 0
            for (i, b) in name.enumerated() { raw[i + 1] = b }
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + 1 + name.count)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        guard rc == 0 else {
            close(fd)
            throw E2EError("bind \(address): \(String(cString: strerror(errno)))")
        }
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let thread = Thread { [self] in self.readLoop() }
        thread.start()
    }

    deinit { close(fd) }

    private func readLoop() {
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            lock.lock()
            let done = closed
            lock.unlock()
            if done { return }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                let text = String(decoding: buffer[0..<n], as: UTF8.self)
                lock.lock()
                received.append(text)
                lock.unlock()
            }
        }
    }

    func messages() -> [String] {
        lock.lock()
        defer { lock.unlock() }
        return received
    }

    /// True once a message with a line equal to `line` has arrived.
    func waitFor(_ line: String, timeout: Double) -> Bool {
        waitUntil(timeout: timeout, poll: 0.05) {
            messages().contains { $0.split(separator: "\n").contains { $0 == line } }
        }
    }

    func shutdown() {
        lock.lock()
        closed = true
        lock.unlock()
    }
}
