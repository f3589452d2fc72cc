// The API server's side of the kubelet API: how it reaches kubelets (directly or through an HTTP CONNECT egress
// proxy), and the client certificate it presents to them.

import Foundation

extension KubeAPIServer {
    /// How the server reaches kubelets, like the cluster egress of --egress-selector-config-file.
    public enum Egress: Sendable, Equatable {
        /// TCP straight to the node's address.
        case direct
        /// HTTP CONNECT through a proxy listening on a Unix socket (transport.uds.udsName).
        case connectUnix(path: String)
        /// HTTP CONNECT through a proxy on TCP host:port (transport.tcp.url).
        case connectTCP(host: String, port: Int)
    }

    /// Sets how kubelets are reached from now on.
    public func setEgress(_ egress: Egress) {
        core.kubeletSide.state.withLock { $0.egress = egress }
    }
}
