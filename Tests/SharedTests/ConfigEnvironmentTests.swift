// Tests of configuration from the environment: ${NAME} expansion in config lines and PGSWIFT_<KEY> overrides.
import Foundation
import XCTest
@testable import Shared

final class ConfigEnvironmentTests: TemporaryFolderCase {
    override class var folderPrefix: String { "configenv" }

    private func parseError(_ text: String, _ env: ConfigEnvironment, _ sourceLine: UInt = #line) -> ConfigError? {
        do {
            _ = try Config.parse(text: text, file: "test.ini", environment: env)
            XCTFail("expected an error", line: sourceLine)
            return nil
        } catch {
            return error
        }
    }

    // MARK: ${NAME}

    func testReferencesAreReplacedAnywhereInALine() throws {
        let env: ConfigEnvironment = ["DB_HOST": "db.internal", "DB_PORT": "5433", "APP": "shop",
                                      "DB_PASSWORD": "p$ss ${word}", "SECTION": "pgbouncer", "SIZE": "12"]
        let c = try Config.parse(text: """
            [${SECTION}]
            default_pool_size = ${SIZE}
            [databases]
            ${APP} = host=${DB_HOST} port=${DB_PORT} dbname=${APP}_db password='${DB_PASSWORD}'
            """, file: "test.ini", environment: env)
        XCTAssertEqual(c.defaultPoolSize, 12)
        let db = try XCTUnwrap(c.database(named: "shop"))
        XCTAssertEqual(db.hosts, ["db.internal"])
        XCTAssertEqual(db.ports, [5433])
        XCTAssertEqual(db.dbname, "shop_db")
        XCTAssertEqual(db.password, "p$ss ${word}", "a value is used as is, never expanded again")
        XCTAssertEqual(c.location(ofSetting: "default_pool_size"), ConfigLocation(file: "test.ini", line: 2),
                       "an expanded line is still the file's line")
        XCTAssertEqual(c.warnings, [])
    }

    func testDefaultsApplyWhenUnsetOrEmpty() throws {
        let text = "[pgbouncer]\nlisten_port = ${PORT:-6500}\nadmin_users = ${ADMINS:-}\npool_mode = ${MODE:-session}\n"
        let unset = try Config.parse(text: text, file: "t.ini", environment: [:])
        XCTAssertEqual(unset.listenPort, 6500)
        XCTAssertEqual(unset.adminUsers, [])
        XCTAssertEqual(unset.poolMode, .session)
        let set = try Config.parse(text: text, file: "t.ini", environment: ["PORT": "7000", "ADMINS": "ops", "MODE": ""])
        XCTAssertEqual(set.listenPort, 7000)
        XCTAssertEqual(set.adminUsers, ["ops"])
        XCTAssertEqual(set.poolMode, .session, "an empty variable takes the default, as in the shell's :-")
    }

    func testASetButEmptyVariableWithoutDefaultIsEmpty() throws {
        let c = try Config.parse(text: "[pgbouncer]\nlisten_addr = ${ADDR}\n", file: "t.ini", environment: ["ADDR": ""])
        XCTAssertEqual(c.listenAddr, [])
    }

    func testUnsetVariableWithoutDefaultIsAnErrorAtTheLine() throws {
        let e = try XCTUnwrap(parseError("[pgbouncer]\n\nlisten_port = ${NOPE}\n", [:]))
        XCTAssertEqual(e.location, ConfigLocation(file: "test.ini", line: 3))
        XCTAssertTrue(e.message.contains("environment variable NOPE is not set"), e.message)
    }

    func testMalformedReferencesAreRefused() throws {
        let env: ConfigEnvironment = ["A": "1"]
        for (text, fragment) in [
            ("x = ${A", "unterminated ${...}"),
            ("x = ${}", "expected a variable name"),
            ("x = ${1A}", "expected a variable name"),
            ("x = ${A-b}", "pgswift knows only ${NAME} and ${NAME:-default}"),
            ("x = ${A:=b}", "pgswift knows only"),
            ("x = ${A:?b}", "pgswift knows only"),
            ("x = ${A B}", "pgswift knows only"),
            ("x = ${A:-${B}}", "a default cannot contain another ${...}"),
        ] {
            let e = try XCTUnwrap(parseError("[pgbouncer]\n" + text + "\n", env), text)
            XCTAssertEqual(e.line, 2, text)
            XCTAssertTrue(e.message.contains(fragment), "\(text): \(e.message)")
        }
    }

    func testErrorsNameTheVariableNeverItsValue() throws {
        // An expansion problem names the variable; its value (a password, say) stays out of the log.
        let e = try XCTUnwrap(parseError("[pgbouncer]\nx = ${SECRET:?}\n", ["SECRET": "hunter2"]))
        XCTAssertFalse(e.message.contains("hunter2"), e.message)
    }

    func testDollarsThatAreNotReferencesStayAsWritten() throws {
        let c = try Config.parse(text: """
            [pgbouncer]
            auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename=$1 AND x = '$$' AND y = '$A'
            server_reset_query = SELECT '$${literal}'
            ; a comment with ${UNSET} is not expanded
            # nor is this one: ${UNSET}
            """, file: "t.ini", environment: [:])
        XCTAssertEqual(c.authQuery, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1 AND x = '$$' AND y = '$A'")
        XCTAssertEqual(c.serverResetQuery, "SELECT '${literal}'", "$${ is a literal ${")
    }

    func testValuesAreNotExpandedAgain() throws {
        let c = try Config.parse(text: "[pgbouncer]\nserver_reset_query = ${Q}\n", file: "t.ini",
                                 environment: ["Q": "SELECT '${OTHER}'"])
        XCTAssertEqual(c.serverResetQuery, "SELECT '${OTHER}'")
    }

    func testAVariableMayHoldAWholeLineOrNothing() throws {
        let c = try Config.parse(text: "[pgbouncer]\n${EXTRA}\n${NOTHING}\n", file: "t.ini",
                                 environment: ["EXTRA": "default_pool_size = 4", "NOTHING": "  "])
        XCTAssertEqual(c.defaultPoolSize, 4)
    }

    func testIncludedFilesAndIncludeNamesAreExpanded() throws {
        _ = try write("pools.ini", "[databases]\napp = host=${DB_HOST} dbname=app\n")
        let main = try write("main.ini", "[pgbouncer]\nauth_type = any\n%include \(tempDir)/${POOLS_FILE}\n")
        let c = try Config.load(path: main, environment: ["DB_HOST": "10.0.0.9", "POOLS_FILE": "pools.ini"])
        XCTAssertEqual(c.database(named: "app")?.hosts, ["10.0.0.9"])
        // An unset variable in an included file is reported at that file's line.
        let e: ConfigError
        do {
            _ = try Config.load(path: main, environment: ["POOLS_FILE": "pools.ini"])
            return XCTFail("expected an error")
        } catch {
            e = error
        }
        XCTAssertEqual(e.location, ConfigLocation(file: tempDir + "/pools.ini", line: 2))
        XCTAssertTrue(e.message.contains("DB_HOST"), e.message)
    }

    func testLoadWithoutAnEnvironmentIgnoresTheProcesses() throws {
        // The default is no environment at all, so tests (and any caller that does not ask) do not
        // depend on the variables they run with; the services pass ConfigEnvironment.process().
        setenv("PGSWIFT_DEFAULT_POOL_SIZE", "3", 1)
        defer { unsetenv("PGSWIFT_DEFAULT_POOL_SIZE") }
        let main = try write("p.ini", "[pgbouncer]\nauth_type = any\n")
        XCTAssertEqual(try Config.load(path: main).defaultPoolSize, 20)
        XCTAssertEqual(try Config.load(path: main, environment: .process()).defaultPoolSize, 3)
        XCTAssertEqual(ConfigEnvironment.process().variables["PGSWIFT_DEFAULT_POOL_SIZE"], "3")
    }

    // MARK: PGSWIFT_<KEY>

    func testOverridesApplyAfterTheFileAndBeforeSET() throws {
        let text = "[pgbouncer]\ndefault_pool_size = 7\npool_mode = transaction\n[pgswift]\nworkers = 2\n"
        let env: ConfigEnvironment = ["PGSWIFT_DEFAULT_POOL_SIZE": "50", "PGSWIFT_WORKERS": "4",
                                      "PGSWIFT_MAX_CLIENT_CONN": "1000", "HOME": "/root"]
        let c = try Config.parse(text: text, file: "/etc/p.ini", environment: env)
        XCTAssertEqual(c.defaultPoolSize, 50)
        XCTAssertEqual(c.workers, 4, "[pgswift] keys too")
        XCTAssertEqual(c.maxClientConn, 1000, "a key the file does not set")
        XCTAssertEqual(c.poolMode, .transaction, "keys without a variable keep the file's value")
        XCTAssertEqual(c.location(ofSetting: "default_pool_size"), .environment("PGSWIFT_DEFAULT_POOL_SIZE"))
        XCTAssertEqual(c.location(ofSetting: "pool_mode"), ConfigLocation(file: "/etc/p.ini", line: 3))
        XCTAssertEqual(c.settingsFromTheEnvironment().map(\.key), ["default_pool_size", "max_client_conn", "workers"])
        XCTAssertEqual(c.settingsFromTheEnvironment().first?.variable, "PGSWIFT_DEFAULT_POOL_SIZE")
        XCTAssertEqual(c.settings().first { $0.key == "default_pool_size" }?.value, "50", "SHOW CONFIG's value")
        XCTAssertEqual(c.warnings, [])

        // The admin console's SET goes on top, and then that key is no longer the environment's.
        let set = try Config.parse(text: text, file: "/etc/p.ini", overrides: [ConfigOverride(key: "default_pool_size", value: "9")],
                                   environment: env)
        XCTAssertEqual(set.defaultPoolSize, 9)
        XCTAssertEqual(set.settingsFromTheEnvironment().map(\.key), ["max_client_conn", "workers"])
    }

    func testOverrideNamesAreTheKeyInUpperCase() {
        XCTAssertEqual(ConfigEnvironment.overrideName(forKey: "default_pool_size"), "PGSWIFT_DEFAULT_POOL_SIZE")
    }

    func testBadOverrideValueIsAnErrorNamingTheVariable() throws {
        let e = try XCTUnwrap(parseError("[pgswift]\nworkers = 2\n", ["PGSWIFT_WORKERS": "many"]))
        XCTAssertEqual(e.location, .environment("PGSWIFT_WORKERS"))
        XCTAssertEqual(e.description, "environment variable PGSWIFT_WORKERS: invalid value \"many\" for workers: not an integer")
        let mode = try XCTUnwrap(parseError("", ["PGSWIFT_POOL_MODE": "sometimes"]))
        XCTAssertTrue(mode.description.hasPrefix("environment variable PGSWIFT_POOL_MODE: invalid value"), mode.description)
    }

    func testUnknownPrefixedVariablesWarnAndPgswiftsOwnAreLeftAlone() throws {
        let c = try Config.parse(text: "[pgbouncer]\n", file: "p.ini", environment: [
            "PGSWIFT_DEFAULT_POOLSIZE": "50",  // a typo
            "PGSWIFT_MOCK_AUTH_KEY": "k", "PGSWIFT_REEXEC": "v1", "PGBOUNCER_X": "1",
        ])
        XCTAssertEqual(c.warnings.map(\.description),
                       ["environment variable PGSWIFT_DEFAULT_POOLSIZE: PGSWIFT_DEFAULT_POOLSIZE names no [pgbouncer] or [pgswift] setting; ignored"])
        XCTAssertEqual(c.defaultPoolSize, 20)
    }

    func testOverrideOfAnUnimplementedKeyWarnsAsTheFileDoes() throws {
        let c = try Config.parse(text: "[pgbouncer]\n", file: "p.ini", environment: ["PGSWIFT_SBUF_LOOPCNT": "2"])
        XCTAssertEqual(c.warnings.map(\.description),
                       ["environment variable PGSWIFT_SBUF_LOOPCNT: sbuf_loopcnt is not implemented by pgswift yet; ignored"])
    }

    func testEmptyOverrideSetsTheKeyToEmptyAsAnEmptyLineWould() throws {
        let c = try Config.parse(text: "[pgbouncer]\nlisten_addr = 127.0.0.1\n", file: "p.ini",
                                 environment: ["PGSWIFT_LISTEN_ADDR": ""])
        XCTAssertEqual(c.listenAddr, [])
    }

    func testAFileWithoutPgbouncerSectionIsExpectedWhenTheEnvironmentSetsKeys() throws {
        let text = "[databases]\napp = host=db\n"
        XCTAssertEqual(try Config.parse(text: text, file: "p.ini", environment: ["PGSWIFT_LISTEN_PORT": "7000"]).warnings, [])
        XCTAssertEqual(try Config.parse(text: text, file: "p.ini").warnings.map(\.message), ["no [pgbouncer] section; using defaults"])
    }

    func testRelativeAuthFileFromTheEnvironmentResolvesAsTheFilesWould() throws {
        _ = try write("users.txt", "\"bob\" \"pw\"\n")
        let main = try write("p.ini", "[pgbouncer]\nauth_type = any\n")
        let c = try Config.load(path: main, environment: ["PGSWIFT_AUTH_FILE": "users.txt"])
        XCTAssertEqual(c.authFile, tempDir + "/users.txt")
    }

    func testReloadSeesTheSameEnvironmentAndTheVariableStillBeatsTheFile() throws {
        let env: ConfigEnvironment = ["PGSWIFT_DEFAULT_POOL_SIZE": "50", "DB": "10.0.0.1"]
        let main = try write("p.ini", "[pgbouncer]\nauth_type = any\ndefault_pool_size = 7\n[databases]\napp = host=${DB}\n")
        XCTAssertEqual(try Config.load(path: main, environment: env).defaultPoolSize, 50)
        // An edited file, loaded again with the same (unchanged) environment, as RELOAD does.
        _ = try write("p.ini", "[pgbouncer]\nauth_type = any\ndefault_pool_size = 8\nmax_client_conn = 9\n[databases]\napp = host=${DB} port=6000\n")
        let again = try Config.load(path: main, environment: env)
        XCTAssertEqual(again.defaultPoolSize, 50)
        XCTAssertEqual(again.maxClientConn, 9)
        XCTAssertEqual(again.database(named: "app")?.hosts, ["10.0.0.1"])
        XCTAssertEqual(again.database(named: "app")?.ports, [6000])
    }

    func testEnvironmentLocationPrintsWithoutALine() {
        XCTAssertEqual(ConfigLocation.environment("PGSWIFT_X").description, "environment variable PGSWIFT_X")
        XCTAssertEqual(ConfigLocation.environment("PGSWIFT_X").environmentVariable, "PGSWIFT_X")
        XCTAssertNil(ConfigLocation(file: "a.ini", line: 3).environmentVariable)
        XCTAssertEqual(ConfigLocation(file: "a.ini", line: 0).description, "a.ini:0")
    }
}
