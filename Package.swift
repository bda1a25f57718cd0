// swift-tools-version:6.0
// pgswift: a PostgreSQL connection pooler. No Swift package dependencies: Glibc,
// OpenSSL (libssl-dev) and libsystemd (libsystemd-dev) only.
import PackageDescription

let package = Package(
    name: "pgswift",
    products: [
        .executable(name: "pgswift", targets: ["Supervisor"]),
        .executable(name: "pgswift-worker", targets: ["Worker"]),
        .executable(name: "pgswift-fuzz", targets: ["PgswiftFuzz"]),
    ],
    targets: [
        // Header-only shim for what Glibc does not export to Swift (epoll, signalfd, accept4, CMSG...).
        .target(name: "CLinux", path: "Sources/CLinux"),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSystemd", path: "Sources/CSystemd", pkgConfig: "libsystemd",
                       providers: [.apt(["libsystemd-dev"])]),
        .target(name: "Shared", dependencies: ["CLinux", "COpenSSL"], path: "Sources/Shared"),
        .executableTarget(name: "Worker", dependencies: ["Shared", "CLinux", "COpenSSL"], path: "Sources/Worker"),
        .executableTarget(name: "Supervisor", dependencies: ["Shared", "CLinux", "CSystemd"],
                          path: "Sources/Supervisor"),
        // The fuzzer (`make fuzz`, fuzz/README in README.md): generator library and its driver.
        .target(name: "FuzzCore", path: "Sources/FuzzCore"),
        .executableTarget(name: "PgswiftFuzz", dependencies: ["FuzzCore"], path: "Sources/PgswiftFuzz"),
        .testTarget(name: "SharedTests", dependencies: ["Shared"], path: "Tests/SharedTests"),
        .testTarget(name: "WorkerTests", dependencies: ["Worker", "Shared"], path: "Tests/WorkerTests"),
        .testTarget(name: "SupervisorTests", dependencies: ["Supervisor", "Shared"],
                    path: "Tests/SupervisorTests"),
        .testTarget(name: "FuzzCoreTests", dependencies: ["FuzzCore"], path: "Tests/FuzzCoreTests"),
        .testTarget(name: "EndToEndTests", dependencies: ["Shared"], path: "Tests/EndToEndTests",
                    exclude: ["drivers"]),
    ]
)
