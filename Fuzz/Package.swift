// swift-tools-version:6.0
// A libFuzzer target for the sync wire decoders. Build and run with ./run.sh (see there).
// Needs the main package to export `.library(name: "SyncProtocol", targets: ["SyncProtocol"])`.
import PackageDescription

let package = Package(
    name: "keepstate-fuzz",
    dependencies: [
        .package(name: "keepstate", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "SyncFuzz",
            dependencies: [
                .product(name: "SyncProtocol", package: "keepstate"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
