// HTTP/2 settings both ends use: windows sized for a few long streams carrying bulk bytes (the tunnel's Connect
// stream), not for many small calls.

import NIOCore
import NIOHTTP2

enum GRPCHTTP2Settings {
    /// What a peer may send on one stream before we acknowledge reading it.
    static let streamWindow = 1 << 20

    static func configuration() -> NIOHTTP2Handler.Configuration {
        var config = NIOHTTP2Handler.Configuration()
        config.connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 16_384),
            HTTP2Setting(parameter: .initialWindowSize, value: streamWindow),
        ]
        config.stream.targetWindowSize = streamWindow
        config.stream.outboundBufferSizeHighWatermark = 256 << 10
        config.stream.outboundBufferSizeLowWatermark = 128 << 10
        return config
    }
}

/// A peer's address the way gRPC prints it: ipv4:1.2.3.4:5, ipv6:[::1]:5, unix:/path.
func peerDescription(_ address: SocketAddress?) -> String {
    guard let address else { return "unknown" }
    switch address {
    case .v4: return "ipv4:\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    case .v6: return "ipv6:[\(address.ipAddress ?? "?")]:\(address.port ?? 0)"
    case .unixDomainSocket: return "unix:\(address.pathname ?? "")"
    }
}
