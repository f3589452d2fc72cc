// Idle keep-alive connections, per scheme + host + port.

import Synchronization

/// Keeps up to `maxIdlePerHost` idle connections per key; connections the server closed are dropped on the way.
final class ConnectionPool: Sendable {
    private struct State {
        var idle: [HTTPURL.PoolKey: [HTTPConnection]] = [:]
        var closed = false
    }

    private let state = Mutex(State())
    let maxIdlePerHost: Int

    init(maxIdlePerHost: Int) {
        self.maxIdlePerHost = maxIdlePerHost
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// An idle, still open connection for `key`, most recently used first.
    func take(_ key: HTTPURL.PoolKey) -> HTTPConnection? {
        var dead: [HTTPConnection] = []
        let found: HTTPConnection? = state.withLock { s in
            while let c = s.idle[key]?.popLast() {
                if c.isActive { return c }
                dead.append(c)
            }
            return nil
        }
        for c in dead { c.close() }
        return found
    }

    /// Keeps `connection` for reuse; false (the caller closes it) when the pool is full or shut down.
    func put(_ connection: HTTPConnection) -> Bool {
        state.withLock { s in
            guard !s.closed, connection.isActive, s.idle[connection.key, default: []].count < maxIdlePerHost else { return false }
            s.idle[connection.key, default: []].append(connection)
            return true
        }
    }

    /// Forgets `connection` (it was closed).
    func remove(_ connection: HTTPConnection) {
        state.withLock { s in
            s.idle[connection.key]?.removeAll { $0 === connection }
            if s.idle[connection.key]?.isEmpty == true { s.idle[connection.key] = nil }
        }
    }

    /// Marks the pool closed and returns every idle connection, for the caller to close.
    func shutdown() -> [HTTPConnection] {
        state.withLock { s in
            s.closed = true
            defer { s.idle = [:] }
            return s.idle.values.flatMap { $0 }
        }
    }
}
