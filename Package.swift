// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "keepstate",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "keepstate", targets: ["keepstate"]),
        // For the libFuzzer package under Fuzz/.
        .library(name: "SyncProtocol", targets: ["SyncProtocol"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // Value types: tuples, NAT, state, the per-VRF table. No I/O.
        .target(name: "ConntrackModel", swiftSettings: strict),
        // The HA sync rules (which conntracks are synced, with which timeout; delays, failover
        // re-arm, forced synchronization). Pure: time and randomness come from the caller.
        .target(name: "SyncPolicy", dependencies: ["ConntrackModel"], swiftSettings: strict),
        // Wire format and pure session state machines. ByteBuffer only, no sockets.
        .target(
            name: "SyncProtocol",
            dependencies: ["ConntrackModel", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        // keepalived-style configuration: lexer, parser, validated model.
        .target(name: "Config", swiftSettings: strict),
        // libnetfilter_conntrack behind a small C shim (flat structs, batched netlink writes,
        // sockets opened in a network namespace). Only NetfilterConntrack imports it.
        .target(
            name: "CNetfilterConntrack",
            linkerSettings: [.linkedLibrary("netfilter_conntrack"), .linkedLibrary("nfnetlink")]
        ),
        // libnl-route-3 behind its own C shim (never in one module with libnetfilter_conntrack:
        // their headers clash). Only NetlinkRoute imports it.
        .target(
            name: "CNetlinkRoute",
            cSettings: [.unsafeFlags(["-I/usr/include/libnl3"])],
            linkerSettings: [.linkedLibrary("nl-route-3"), .linkedLibrary("nl-3")]
        ),
        // Virtual addresses, links and their events, macvlan for use_vmac, per namespace.
        .target(name: "NetlinkRoute", dependencies: ["CNetlinkRoute"], swiftSettings: strict),
        // The thin Swift wrapper: dump, events, batched create and delete, per namespace.
        .target(name: "NetfilterConntrack", dependencies: ["CNetfilterConntrack", "ConntrackModel"], swiftSettings: strict),
        // The kernel's conntrack table of a VRF (its network namespace) behind `Dataplane`.
        .target(
            name: "KernelDataplane",
            dependencies: ["ConntrackModel", "Dataplane", "NetfilterConntrack"],
            swiftSettings: strict
        ),
        // Child processes with posix_spawn and waitpid (scripts, drill, lab and test helpers).
        .target(name: "Spawn", swiftSettings: strict),
        // Helpers shared by the test targets (network namespaces, processes).
        .target(name: "TestSupport", dependencies: ["Spawn"], path: "Tests/TestSupport", swiftSettings: strict),
        // VRRP (RFC 3768, 5798, 9568): packet codec, receive checks, the state machine. Pure.
        .target(name: "VRRP", swiftSettings: strict),
        // What Swift's Glibc module does not show (setns, in6_pktinfo and cmsg handling, AF_PACKET
        // and BPF types, eventfd). Only VRRPNet imports it.
        .target(name: "CVRRPNet"),
        // The I/O of a VRRP instance: raw VRRP sockets (IPv4 through SwiftNIO, IPv6 on a thread),
        // gratuitous ARP / unsolicited NA over AF_PACKET, and `VRRPRunner`, which drives one
        // `VRRPInstanceState` with a monotonic clock (docs/vrrp-runtime.md).
        .target(
            name: "VRRPNet",
            dependencies: [
                "VRRP", "CVRRPNet",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Takeover benchmark against keepalived in network namespaces, and the lab helpers
        // (namespaces, bridge segment, keepalived and tshark processes) the namespace tests share.
        .target(
            name: "VRRPBench",
            dependencies: [
                "VRRP", "VRRPNet", "Spawn",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The Dataplane interface and the in-memory implementation with a traffic generator.
        .target(name: "Dataplane", dependencies: ["ConntrackModel"], swiftSettings: strict),
        // CA and node certificates for the sync connections.
        .target(
            name: "PKI",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        // The sync engine: N mutually authenticated TLS connections per peer, resync, statistics.
        .target(
            name: "SyncEngine",
            dependencies: [
                "ConntrackModel", "SyncProtocol", "SyncPolicy", "Dataplane", "PKI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // A small HTTP/1.1 server for the Prometheus endpoint: GET /metrics answers the text a
        // closure gives, any other path 404 (SwiftNIO's NIOHTTP1).
        .target(
            name: "MetricsHTTP",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // A VRF's nftables ruleset (`nft -j list ruleset` in its namespace), normalised and
        // fingerprinted, so that the two nodes can compare theirs (configuration drift).
        .target(
            name: "NFTRuleset",
            dependencies: ["SyncProtocol", "Spawn", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        // The daemon: HA groups, VRFs (dataplane + sync engine), control socket, metrics, lifecycle.
        .target(
            name: "Daemon",
            dependencies: [
                "Config", "ConntrackModel", "Dataplane", "KernelDataplane", "SyncEngine", "SyncPolicy", "SyncProtocol",
                "VRRP", "VRRPNet", "NetlinkRoute", "Spawn", "MetricsHTTP", "NFTRuleset",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // Subcommands (a library so that tests can drive them).
        .target(
            name: "KeepstateCLI",
            dependencies: [
                "ConntrackModel", "SyncProtocol", "SyncPolicy", "Dataplane", "SyncEngine", "PKI", "Config", "NetfilterConntrack",
                "KernelDataplane", "Daemon", "NetlinkRoute", "Spawn",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "keepstate", dependencies: ["KeepstateCLI"], swiftSettings: strict),

        .testTarget(name: "ConntrackModelTests", dependencies: ["ConntrackModel"], swiftSettings: strict),
        .testTarget(name: "SyncPolicyTests", dependencies: ["SyncPolicy", "ConntrackModel"], swiftSettings: strict),
        .testTarget(
            name: "SyncProtocolTests",
            dependencies: ["SyncProtocol", "ConntrackModel", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(name: "ConfigTests", dependencies: ["Config", "ConntrackModel"], swiftSettings: strict),
        .testTarget(name: "DataplaneTests", dependencies: ["Dataplane", "ConntrackModel"], swiftSettings: strict),
        .testTarget(name: "PKITests", dependencies: ["PKI"], swiftSettings: strict),
        .testTarget(name: "VRRPTests", dependencies: ["VRRP", "ConntrackModel"], swiftSettings: strict),
        .testTarget(
            name: "VRRPNetTests",
            dependencies: [
                "VRRP", "VRRPNet", "VRRPBench", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NetfilterConntrackTests", dependencies: ["NetfilterConntrack", "ConntrackModel", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "SyncEngineTests",
            dependencies: [
                "SyncEngine", "SyncProtocol", "SyncPolicy", "Dataplane", "ConntrackModel", "PKI", "KernelDataplane", "NetfilterConntrack",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "NetlinkRouteTests", dependencies: ["NetlinkRoute", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "NFTRulesetTests", dependencies: ["NFTRuleset", "SyncProtocol", "Spawn", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "KeepstateCLITests",
            dependencies: ["KeepstateCLI", "Config", "Daemon", "SyncEngine", "TestSupport", "VRRPBench", "NetfilterConntrack",
                           "ConntrackModel", "Dataplane", "PKI", "SyncPolicy"],
            // The golden files of the `show` output, read by path (GoldenTests).
            exclude: ["Golden"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "DaemonTests",
            dependencies: ["Daemon", "Config", "Dataplane", "ConntrackModel", "SyncEngine", "SyncPolicy", "PKI", "TestSupport",
                           "MetricsHTTP", "VRRP", "VRRPNet",
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
