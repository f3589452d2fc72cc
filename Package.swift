// swift-tools-version:6.1
// edged: one lean daemon that turns a small Linux gateway into a Kubernetes edge node.
import PackageDescription

let package = Package(
    name: "edged",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "edged", targets: ["edged"]),
        .executable(name: "edgectl", targets: ["edgectl"]),
        .executable(name: "edged-monitor", targets: ["edged-monitor"]),
        .executable(name: "edged-bench", targets: ["edged-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.10.0"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.36.0"),
        // No default traits: BinaryDelimitedStreams would link full Foundation (and ICU) into the daemon.
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.30.0", traits: []),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.0.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.0.0"),
    ],
    targets: [
        // C libraries, through system library targets.
        .systemLibrary(name: "CYAML", pkgConfig: "yaml-0.1", providers: [.apt(["libyaml-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // glibc's mallopt/malloc_trim (malloc.h), for edged's memory on small gateways (EdgedDaemon/MallocTuning.swift).
        .systemLibrary(name: "CMalloc"),
        // Linux calls the Glibc module does not import (closefrom for posix_spawn, pipe2, setns, pidfd_open), called
        // directly so that the static binaries have them (Sources/CLinux/shim.h).
        .systemLibrary(name: "CLinux"),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // libsystemd: sd_notify, the watchdog, socket activation, writing and reading the journal. The host build links
        // the shared library; the static cross build links sid's libsystemd.a (cross/README.md).
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),

        // The per-container monitor: a tiny static C program (no Swift runtime) that sets up and reaps one container.
        .executableTarget(
            name: "edged-monitor",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("seccomp"), .unsafeFlags(["-static-stdlib", "-Xclang-linker", "-static"])]
        ),

        // Core types shared by every module: the Pod model, YAML/JSON manifests, quantities, errors.
        .target(name: "EdgedCore", dependencies: ["CYAML"]),
        // Container executor: sandboxes, containers via edged-monitor, cgroups v1/v2, re-adoption after restart.
        .target(name: "EdgedRuntime", dependencies: [
            "EdgedCore", "CLinux",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Image store: content-addressed blobs, archive import, registry pull, layer unpack, GC.
        .target(name: "EdgedImages", dependencies: [
            "EdgedCore", "CZlib",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            "EdgedHTTP",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // HTTP/1.1 client on SwiftNIO + NIOSSL (pinned CA, client certificates, streamed bodies): registry and API server.
        .target(name: "EdgedHTTP", dependencies: [
            "EdgedCore",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOTLS", package: "swift-nio"),
        ]),
        // Kubernetes API client: typed models, get/list/watch/create/patch/update/delete, list+watch informers.
        .target(name: "EdgedKube", dependencies: [
            "EdgedCore", "EdgedHTTP",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // Node credentials: device keys, CSRs, CA pinning, bootstrap-token discovery, cert storage and rotation timing.
        .target(name: "EdgedCredentials", dependencies: [
            "EdgedCore",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
        ]),
        // Pod networking through CNI plugins: conflist loading, ADD/DEL/CHECK, result parsing, result cache.
        .target(name: "EdgedNetwork", dependencies: [
            "EdgedCore", "CLinux",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Pod runner: manifest source, pod workers, restarts/backoff, probes, volumes, status.
        .target(name: "EdgedNode", dependencies: [
            "EdgedCore", "EdgedRuntime", "EdgedImages", "EdgedControl", "EdgedNetwork",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // Cluster membership: join (TLS bootstrap), Node + Lease, API-bound pods and their status, Events, cert rotation.
        .target(name: "EdgedCluster", dependencies: [
            "EdgedCore", "EdgedKube", "EdgedCredentials", "EdgedNode", "EdgedImages", "EdgedHTTP", "EdgedControl",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // Edge hub: caching proxy to kube-apiserver with a crash-safe SQLite store, cloud health and offline serving.
        .target(name: "EdgedHub", dependencies: [
            "EdgedCore", "EdgedKube", "EdgedHTTP", "CSQLite",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // The kubelet API on :10250: HTTPS with client-cert/TokenReview authn and SubjectAccessReview authz; logs,
        // exec/attach (SPDY/3.1 and WebSocket channel protocols), port-forward, stats and metrics.
        .target(name: "EdgedKubeletAPI", dependencies: [
            "EdgedCore", "EdgedKube", "EdgedHTTP", "CZlib",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "X509", package: "swift-certificates"),
        ]),
        // gRPC over HTTP/2 + TLS for GRPCCore on SwiftNIO: client and server transports without Foundation.
        .target(name: "EdgedGRPCTransport", dependencies: [
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            .product(name: "NIOHPACK", package: "swift-nio-http2"),
            .product(name: "X509", package: "swift-certificates"),
        ]),
        // Reverse tunnel (Konnectivity agent protocol over gRPC): the node's agent and the cloud-side tunnel server
        // with its HTTP CONNECT frontend for kube-apiserver's egress selector.
        .target(name: "EdgedTunnel", dependencies: [
            "EdgedCore", "EdgedHTTP",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            "EdgedGRPCTransport",
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "X509", package: "swift-certificates"),
        ], exclude: ["Proto/konnectivity.proto", "Proto/README.md"]),
        // The local control API (Unix socket, HTTP/1.1 + JSON): shared types, server (daemon) and client (edgectl).
        .target(name: "EdgedControl", dependencies: [
            "EdgedCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),
        // systemd integration through libsystemd: sd_notify (READY/STATUS/WATCHDOG), socket activation (edged.socket)
        // and the journald log handler.
        .target(name: "EdgedSystemd", dependencies: [
            "CSystemd",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // Builds every service from the config and runs them in one ServiceGroup.
        .target(name: "EdgedDaemon", dependencies: [
            "EdgedCore", "EdgedNode", "EdgedImages", "EdgedRuntime", "EdgedControl", "EdgedSystemd", "EdgedCluster", "EdgedNetwork",
            "EdgedHub", "EdgedKube", "EdgedCredentials", "EdgedKubeletAPI", "EdgedTunnel", "CMalloc",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        // The cloud-side autonomy controller (`edged autonomy-controller`): keeps the pods of autonomous edge nodes
        // bound through long outages by setting their unreachable/not-ready NoExecute tolerations; Lease leader election.
        .target(name: "EdgedAutonomy", dependencies: [
            "EdgedCore", "EdgedKube",
            .product(name: "Logging", package: "swift-log"),
        ]),

        .executableTarget(name: "edged", dependencies: [
            "EdgedDaemon", "EdgedTunnel", "EdgedSystemd", "EdgedAutonomy",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "edgectl", dependencies: [
            "EdgedControl", "EdgedCore", "CSystemd",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The benchmark; joined figures use the test API server from EdgedTestSupport.
        .executableTarget(name: "edged-bench", dependencies: [
            "EdgedCore", "EdgedControl", "EdgedDaemon", "EdgedTestSupport", "EdgedHub", "EdgedHTTP", "EdgedTunnel",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        .testTarget(name: "EdgedCoreTests", dependencies: ["EdgedCore"]),
        .testTarget(name: "EdgedHTTPTests", dependencies: ["EdgedHTTP", "EdgedTestSupport"]),
        .testTarget(name: "EdgedKubeTests", dependencies: ["EdgedKube", "EdgedCore", "EdgedHTTP", "EdgedTestSupport"]),
        .testTarget(name: "EdgedCredentialsTests", dependencies: ["EdgedCredentials", "EdgedCore", "EdgedTestSupport", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "EdgedNetworkTests", dependencies: ["EdgedNetwork", "EdgedCore", "EdgedRuntime", "EdgedTestSupport"]),
        .testTarget(name: "EdgedRuntimeTests", dependencies: ["EdgedRuntime", "EdgedCore", "EdgedTestSupport"]),
        .testTarget(name: "EdgedImagesTests", dependencies: ["EdgedImages", "EdgedCore", "EdgedTestSupport"]),
        .testTarget(name: "EdgedNodeTests", dependencies: ["EdgedNode", "EdgedCore", "EdgedTestSupport"]),
        .testTarget(name: "EdgedControlTests", dependencies: ["EdgedControl", "EdgedCore"]),
        .testTarget(name: "EdgedSystemdTests", dependencies: ["EdgedSystemd", "CSystemd", "EdgedTestSupport"]),
        .testTarget(name: "EdgedIntegrationTests", dependencies: ["EdgedCore", "EdgedControl", "EdgedDaemon", "EdgedNode", "EdgedTestSupport"]),
        .testTarget(name: "EdgedHubTests", dependencies: ["EdgedHub", "EdgedCore", "EdgedKube", "EdgedHTTP", "EdgedTestSupport"]),
        .testTarget(name: "EdgedKubeletAPITests", dependencies: ["EdgedKubeletAPI", "EdgedCore", "EdgedKube", "EdgedHTTP", "EdgedTestSupport"]),
        .testTarget(name: "EdgedGRPCTransportTests", dependencies: [
            "EdgedGRPCTransport", "EdgedTestSupport",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHPACK", package: "swift-nio-http2"),
        ]),
        .testTarget(name: "EdgedFuzzTests", dependencies: [
            "EdgedCore", "EdgedKube", "EdgedImages", "EdgedNetwork", "EdgedTunnel", "EdgedKubeletAPI", "EdgedGRPCTransport",
            "EdgedTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
        ], exclude: ["Crashers"]),
        .testTarget(name: "EdgedTunnelTests", dependencies: ["EdgedTunnel", "EdgedCore", "EdgedTestSupport"]),
        .testTarget(name: "KubeAPIServerTests", dependencies: ["EdgedTestSupport", "EdgedCore"]),
        .testTarget(name: "EdgedAutonomyTests", dependencies: ["EdgedAutonomy", "EdgedCore", "EdgedKube", "EdgedTestSupport"]),
        // Helpers only tests import: building busybox rootfs/images from Debian's busybox-static, temp dirs.
        // Also the test Kubernetes API server (TLS, client certs, resourceVersions, watch, CSR signing).
        .target(name: "EdgedTestSupport", dependencies: [
            "EdgedCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
        ], path: "Tests/EdgedTestSupport"),
    ]
)
