// Who holds the test API server's open watches: each watch stream with the user that opened it, for the fleet
// benchmark and FleetTests (watches per node), which the store's watchers (selectors only) cannot say. Fed by two
// hooks in KubeAPIServer+NIO.swift: a watch stream starts (`opened`) and ends (`closed`: the client went away, a
// new request on the connection, timeoutSeconds).

import Synchronization

/// The open watch streams and their users. Thread-safe.
final class KubeTraffic: Sendable {
    private let open = Mutex<[Int: KubeAPIServer.OpenWatch]>([:])

    func opened(_ id: Int, user: String, path: String) {
        open.withLock { $0[id] = KubeAPIServer.OpenWatch(user: user, path: path) }
    }

    func closed(_ id: Int) {
        _ = open.withLock { $0.removeValue(forKey: id) }
    }

    var watches: [KubeAPIServer.OpenWatch] { open.withLock { Array($0.values) } }
}

extension KubeAPIServer {
    /// One open watch stream: who opened it and the path and query it asked for.
    public struct OpenWatch: Sendable, Equatable, CustomStringConvertible {
        public let user: String
        public let path: String
        public var description: String { "\(user) \(path)" }
    }

    /// Every watch stream open right now, with its user.
    public func openWatchStreams() -> [OpenWatch] { core.traffic.watches }

    /// Open watch streams by user ("system:node:<name>" for a node).
    public func openWatchesByUser() -> [String: [OpenWatch]] { Dictionary(grouping: core.traffic.watches, by: \.user) }
}
